"""Reference encodings of Hugging Face `tokenizers` for real vocabularies.

Usage: python tokenizers_ref.py VOCAB_DIR OUT_DIR

VOCAB_DIR holds llama.cpp's ggml-vocab-<name>.gguf files with their test
vectors (.gguf.inp: texts separated by "\\n__ggml_vocab_test__\\n"; .gguf.out:
the original tokenizer's ids, one line per text, no BOS). transformers turns
each vocabulary into a tokenizer (AutoTokenizer.from_pretrained(gguf_file=)),
save_pretrained writes its tokenizer.json, and `tokenizers` running that very
file gives the ids every case is checked against.

Besides the converted files, some cases are the same vocabulary rewritten the
way the published tokenizer.json of that family is written (the converter
emits one style per family; the loader must read the others too):
    llama-spm-legacy   Llama 2 / TinyLlama / Mistral v0.1: Prepend + Replace
                       normalizer, no pre-tokenizer, <unk>
    llama-spm-split    Metaspace prepend_scheme "always", split true
    llama-spm-eos      tokenizer_config.json add_bos_token + add_eos_token,
                       which transformers 5 ignores beside a tokenizer.json
                       (the file's post-processor rules)
    llama3-official    Llama 3: <|begin_of_text|> through a Sequence post-
                       processor, ignore_merges, the added tokens only in
                       added_tokens
    qwen2-nfc          Qwen2: the NFC normalizer
    gpt-2-digits       SmolLM: Digits(individual_digits) before ByteLevel
    llama-bpe-strings  merges as "a b" strings (the pre-0.20 format)

Files per case, OUT_DIR/<case>/:
    tokenizer.json, tokenizer_config.json
    ref.json  {"vocab_size": N, "source": gguf name, "add_special": [ids the
              post-processor adds], "inp": [{"text", "out", "ids"}] (absent
              for cases without test vectors), "random": [{"text", "ids"
              (plain: special tokens not parsed), "ids_special" (parsed),
              "decode" (decode of ids, skip_special_tokens=False),
              optionally "ids_add" (add_special_tokens=True) and
              "decode_add" (its decode, skip_special_tokens=True)}]}
OUT_DIR/cases.txt lists the cases, one per line.
"""
import copy
import json
import os
import random
import sys
import warnings

warnings.filterwarnings("ignore")

from tokenizers import Tokenizer  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402

N_RANDOM = 2000
SEED = 20261207
SEP = "\n__ggml_vocab_test__\n"

# Converted as they are (name -> gguf vocabulary).
CONVERTED = ["llama-spm", "phi-3", "llama-bpe", "qwen2", "qwen35", "gpt-2", "starcoder"]


def legacy_spm(j, cfg):
    j["normalizer"] = {
        "type": "Sequence",
        "normalizers": [
            {"type": "Prepend", "prepend": "\u2581"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"},
        ],
    }
    j["pre_tokenizer"] = None
    j["model"]["unk_token"] = "<unk>"


def split_spm(j, cfg):
    j["pre_tokenizer"] = {"type": "Metaspace", "replacement": "\u2581",
                          "prepend_scheme": "always", "split": True}
    j["decoder"] = {"type": "Metaspace", "replacement": "\u2581",
                    "prepend_scheme": "always", "split": True}


def eos_spm(j, cfg):
    cfg["add_bos_token"] = True
    cfg["add_eos_token"] = True


def llama3_official(j, cfg):
    m = j["model"]
    added = {t["id"] for t in j["added_tokens"]}
    m["vocab"] = {k: v for k, v in m["vocab"].items() if v not in added}
    m["ignore_merges"] = True
    j["post_processor"] = {
        "type": "Sequence",
        "processors": [
            {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False,
             "use_regex": True},
            {"type": "TemplateProcessing",
             "single": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}},
                        {"Sequence": {"id": "A", "type_id": 0}}],
             "pair": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}},
                      {"Sequence": {"id": "A", "type_id": 0}},
                      {"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 1}},
                      {"Sequence": {"id": "B", "type_id": 1}}],
             "special_tokens": {"<|begin_of_text|>": {
                 "id": "<|begin_of_text|>", "ids": [128000],
                 "tokens": ["<|begin_of_text|>"]}}},
        ],
    }
    # The converter's extra <|endoftext|> (id 128256) lies past Llama 3's
    # 128256 embeddings; the published file has no such token.
    j["added_tokens"] = [t for t in j["added_tokens"] if t["id"] < 128256]


def qwen2_nfc(j, cfg):
    j["normalizer"] = {"type": "NFC"}


def digits(j, cfg):
    j["pre_tokenizer"] = {
        "type": "Sequence",
        "pretokenizers": [
            {"type": "Digits", "individual_digits": True},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
             "use_regex": True},
        ],
    }


def string_merges(j, cfg):
    j["model"]["merges"] = [" ".join(m) for m in j["model"]["merges"]]


# case -> (converted case it starts from, rewrite, compare with the .out ids)
VARIANTS = {
    "llama-spm-legacy": ("llama-spm", legacy_spm, True),
    "llama-spm-split": ("llama-spm", split_spm, False),
    "llama-spm-eos": ("llama-spm", eos_spm, False),
    "llama3-official": ("llama-bpe", llama3_official, True),
    "qwen2-nfc": ("qwen2", qwen2_nfc, True),
    "gpt-2-digits": ("gpt-2", digits, False),
    "llama-bpe-strings": ("llama-bpe", string_merges, True),
}

SCRIPTS = [
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
    "的一是不了人我在有他这为之大来以个中上们到说国和地也子时道出而要于就下得可你年生自会那后能对着事其里所去行过家十用发天如然作方成者多日都三小军二无同么经法当起与好看学进种将还分此心前面又定见只主没公从",
    "абвгдеёжзийклмнопрстуфхцчшщъыьэюяАБВГДЕЁЖЗИЙКЛМНОПРСТУФХЦЧШЩЪЫЬЭЮЯ",
    "ابتثجحخدذرزسشصضطظعغفقكلمنهوي",
    "अआइईउऊएऐओऔकखगघङचछजझञटठडढणतथदधनपफबभमयरलवशषसह्ािीुूेैोौंः",
    "ăâđêôơưàảãáạằẳẵắặầẩẫấậèẻẽéẹềểễếệìỉĩíịòỏõóọồổỗốộờởỡớợùủũúụừửữứựỳỷỹýỵ",
    "αβγδεζηθικλμνξοπρστυφχψωΑΒΓΔ",
    "あいうえおかきくけこアイウエオカキクケコ한국어조선말",
    "0123456789٠١٢٣٤٥٦٧٨٩०१२३४५६७८९½²³",
]
COMBINING = ["\u0300", "\u0301", "\u0303", "\u0309", "\u0323", "\u0302", "\u0306", "\u031b"]
SPACES = [" ", "  ", "\t", "\n", "\r\n", "\r", "\n\n", "   ", "\u00a0", "\u2003",
          "\u3000", "\u2009", "\u202f", "\u180e", "\u2028", "\u0085", "\u000b",
          "\u000c", "\u200b", " \n ", "\t\t\n"]
EMOJI = ["😀", "🙂", "👍🏽", "👨‍👩‍👧‍👦", "🏳️‍🌈", "❤️", "🇯🇵", "🤖", "👩🏾‍💻", "✨", "🦙"]
PUNCT = list(".,;:!?-_()[]{}<>/\\|@#$%^&*+=~`\"'") + ["...", "--", "—", "«", "»", "“", "”", "¿", "¡", "€", "£"]
CONTRACTIONS = ["'s", "'S", "'t", "'T", "'re", "'RE", "'ve", "'m", "'ll", "'LL", "'d", "'D",
                "n't", "'ſ", "'K", "’s"]
WORDS = ["hello", "world", "Hello", "WORLD", "the", "tokenizer", "über", "naïve", "café",
         "Привет", "мир", "你好", "世界", "مرحبا", "नमस्ते", "Tiếng Việt", "xin chào",
         "def", "return", "0x1F", "3.14159", "1,000,000", "2026-12-07", "http://a.b/c?d=e",
         "foo_bar", "CamelCase", "__init__", "i.e.", "e.g.", "I'm", "you're", "DON'T"]


def lookalikes(tok):
    base = ["<s>", "</s>", "<unk>", "<|eot_id|>", "<|begin_of_text|>", "<|end_of_text|>",
            "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|im_", "im_end|>", "<|",
            "|>", "<0x41>", "<0x0A>", "\u2581", "\u2581\u2581", "\u0120", "\u010a",
            "[PAD151646]", "[PAD", "<fim_prefix>", "<|assistant|>", "<|user|>",
            "<|reserved_special_token_3|>", "<<s>>", "<s><s>", "</s/>"]
    added = [t.content for t in tok.get_added_tokens_decoder().values()]
    rng = random.Random(SEED + 1)
    return base + rng.sample(added, min(8, len(added)))


def random_texts(rng, specials):
    out = []
    for i in range(N_RANDOM):
        parts = []
        for _ in range(rng.randint(1, 12)):
            k = rng.random()
            if k < 0.25:
                parts.append(rng.choice(WORDS))
            elif k < 0.45:
                s = rng.choice(SCRIPTS)
                w = "".join(rng.choice(s) for _ in range(rng.randint(1, 8)))
                if rng.random() < 0.2:  # a decomposed accent: NFC changes it
                    w += rng.choice(COMBINING)
                parts.append(w)
            elif k < 0.6:
                parts.append(rng.choice(SPACES))
            elif k < 0.68:
                parts.append(rng.choice(EMOJI))
            elif k < 0.78:
                parts.append("".join(rng.choice(PUNCT) for _ in range(rng.randint(1, 3))))
            elif k < 0.86:
                parts.append(rng.choice(CONTRACTIONS))
            elif k < 0.92:
                parts.append(rng.choice(specials))
            elif k < 0.96:
                parts.append(str(rng.randint(0, 10 ** rng.randint(1, 12))))
            else:  # odd code points: controls, private use, noncharacters
                parts.append(chr(rng.choice([0, 1, 0x1f, 0x7f, 0xad, 0xe000, 0xfffd,
                                             0xfeff, 0x10ffff, 0x1d11e, 0x2060])))
        if rng.random() < 0.3:
            text = " ".join(parts)
        else:
            text = "".join(parts)
        if i % 97 == 0:
            text = " " + text
        if i % 89 == 0:
            text = text + " "
        out.append(text)
    out[0] = ""
    out[1] = " "
    out[2] = "\n"
    return out


def read_inp(vocab_dir, name):
    p = os.path.join(vocab_dir, f"ggml-vocab-{name}.gguf")
    if not os.path.exists(p + ".inp"):
        return None
    texts = open(p + ".inp", encoding="utf-8", newline="").read().split(SEP)
    assert texts[-1] == "", "the .inp file ends with the separator"
    texts = texts[:-1]
    lines = open(p + ".out", encoding="utf-8").read().split("\n")
    outs = [[int(x) for x in ln.split()] for ln in lines[: len(texts)]]
    assert len(outs) == len(texts)
    return list(zip(texts, outs))


def write_case(out_dir, case, source, j, cfg, vocab_dir, with_inp):
    d = os.path.join(out_dir, case)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(j, f, ensure_ascii=False)
    with open(os.path.join(d, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(cfg, f, ensure_ascii=False)
    # `tokenizers` on the file is the truth for the file. transformers 5 adds
    # nothing to it here: beside a tokenizer.json it drops tokenizer_config's
    # add_bos_token/add_eos_token (PreTrainedTokenizerBase.from_pretrained),
    # and its Qwen2Tokenizer and GPT2Tokenizer classes rebuild their own
    # pipeline rather than run the file's - not what the file says.
    tk = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
    ref = {"vocab_size": tk.get_vocab_size(with_added_tokens=True), "source": source,
           "add_special": tk.encode("", add_special_tokens=True).ids}
    if "add_eos_token" in cfg:  # the claim above, checked where it matters
        hf = AutoTokenizer.from_pretrained(d)
        for text in ["hi", "", "Hello world"]:
            assert hf(text).input_ids == tk.encode(text).ids, (case, text)

    def plain(text):
        tk.encode_special_tokens = True
        ids = tk.encode(text, add_special_tokens=False).ids
        tk.encode_special_tokens = False
        return ids

    if with_inp:
        pairs = read_inp(vocab_dir, source)
        if pairs:
            ref["inp"] = [{"text": t, "out": o, "ids": plain(t)} for t, o in pairs]
    rng = random.Random(SEED)
    rows = []
    for i, text in enumerate(random_texts(rng, lookalikes(tk))):
        ids = plain(text)
        row = {"text": text, "ids": ids,
               "ids_special": tk.encode(text, add_special_tokens=False).ids,
               "decode": tk.decode(ids, skip_special_tokens=False)}
        if i % 10 == 0:
            tk.encode_special_tokens = True
            add = tk.encode(text, add_special_tokens=True).ids
            tk.encode_special_tokens = False
            row["ids_add"] = add
            row["decode_add"] = tk.decode(add, skip_special_tokens=True)
        rows.append(row)
    ref["random"] = rows
    with open(os.path.join(d, "ref.json"), "w", encoding="utf-8") as f:
        json.dump(ref, f, ensure_ascii=False)


def main():
    vocab_dir, out_dir = sys.argv[1], sys.argv[2]
    os.makedirs(out_dir, exist_ok=True)
    conv = os.path.join(out_dir, "converted")
    files = {}
    for name in CONVERTED:
        tok = AutoTokenizer.from_pretrained(vocab_dir, gguf_file=f"ggml-vocab-{name}.gguf")
        tok.save_pretrained(os.path.join(conv, name))
        j = json.load(open(os.path.join(conv, name, "tokenizer.json"), encoding="utf-8"))
        cfg = json.load(open(os.path.join(conv, name, "tokenizer_config.json"), encoding="utf-8"))
        files[name] = (j, cfg)
    cases = []
    for name in CONVERTED:
        j, cfg = files[name]
        write_case(out_dir, name, name, j, cfg, vocab_dir, True)
        cases.append(name)
    for case, (base, rewrite, with_inp) in VARIANTS.items():
        j, cfg = copy.deepcopy(files[base][0]), copy.deepcopy(files[base][1])
        rewrite(j, cfg)
        write_case(out_dir, case, base, j, cfg, vocab_dir, with_inp)
        cases.append(case)
    with open(os.path.join(out_dir, "cases.txt"), "w") as f:
        f.write("\n".join(cases) + "\n")


def one_dir(model_dir, case_dir):
    """A case for tok_check from the tokenizer files of a model directory
    (shardlm mkmodel --format hf writes them): random strings only."""
    j = json.load(open(os.path.join(model_dir, "tokenizer.json"), encoding="utf-8"))
    cfg = json.load(open(os.path.join(model_dir, "tokenizer_config.json"), encoding="utf-8"))
    out_dir, case = os.path.split(os.path.abspath(case_dir))
    write_case(out_dir, case, model_dir, j, cfg, None, False)


if __name__ == "__main__":
    if sys.argv[1] == "--dir":
        one_dir(sys.argv[2], sys.argv[3])
    else:
        main()
