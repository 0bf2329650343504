"""Reference outputs of transformers for tiny random Hugging Face models.

Usage: python hf_models.py OUT_DIR
       python hf_models.py --from MODEL_DIR CASE_DIR

The second form writes CASE_DIR/ref.json and logits.f32 (as below) for a
model directory made elsewhere (shardlm mkmodel --format hf), trying prompts
until the greedy path is clear.

For each case below it builds a random-weight model with transformers, saves
it with save_pretrained (the directory shardlm loads: config.json and
safetensors), runs greedy generation from a prompt of token ids, and writes
per-position logits of the whole sequence, teacher-forced. Files per case:
    OUT_DIR/<case>/model/      the Hugging Face directory
    OUT_DIR/<case>/ref.json    {"tokens": prompt + greedy ids, "n_prompt",
                                "vocab_size", "dtype", "min_margin"}
    OUT_DIR/<case>/logits.f32  float32 (len(tokens) - 1, vocab_size): the
                               logits at every position but the last
Then OUT_DIR/cases.txt lists the cases, one per line, with their heads and
kv heads (for the splits a test may ask of them).

16-bit (bfloat16, float16) models are saved so and their reference computed in
float32 from those same 16-bit weights, loaded back with from_pretrained(
dtype=float32): the arithmetic a CPU engine that widens to float32 does, so
the float32 tolerance (1e-4 per row) is the one stated for them too.
Norm weights and biases are random (transformers starts them at one and
zero), so that reading them wrongly shows.

A greedy path that passes within MIN_MARGIN of a tie cannot be compared at
float32 rounding, so each case tries seeds until its greedy path keeps every
top-2 margin above MIN_MARGIN; the margin found is written down.
"""
import json
import os
import sys

import torch
import transformers

MIN_MARGIN = 1e-3
PROMPT_LEN = 8
NEW_TOKENS = 72  # 64+ tokens of greedy text

BASE = dict(
    hidden_size=64,
    intermediate_size=172,
    num_hidden_layers=3,
    num_attention_heads=8,
    num_key_value_heads=4,
    vocab_size=512,  # tok512.bin (the shared llama2.c vocabulary) fits it
    max_position_embeddings=256,
    rms_norm_eps=1e-5,
    initializer_range=0.25,  # well away from uniform logits: clear argmaxes
)

CASES = {
    # name: (config class, model class, overrides, dtype, shard size)
    "llama_f32": ("LlamaConfig", "LlamaForCausalLM", {}, torch.float32, None),
    "llama_tied_f32": (
        "LlamaConfig",
        "LlamaForCausalLM",
        {"tie_word_embeddings": True, "num_key_value_heads": 8},
        torch.float32,
        None,
    ),
    "llama3_f32": (
        "LlamaConfig",
        "LlamaForCausalLM",
        {
            "num_key_value_heads": 2,
            "rope_theta": 500000.0,
            "rope_scaling": {
                "rope_type": "llama3",
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 32,
            },
        },
        torch.float32,
        None,
    ),
    "llama_bf16": ("LlamaConfig", "LlamaForCausalLM", {}, torch.bfloat16, None),
    "llama_f16": ("LlamaConfig", "LlamaForCausalLM", {}, torch.float16, None),
    "llama_sharded_f32": (
        "LlamaConfig",
        "LlamaForCausalLM",
        {},
        torch.float32,
        "100KB",
    ),
    "qwen2_tied_f32": (
        "Qwen2Config",
        "Qwen2ForCausalLM",
        {"tie_word_embeddings": True, "rope_theta": 1000000.0,
         "use_sliding_window": False, "sliding_window": 32},
        torch.float32,
        None,
    ),
    "qwen2_bf16": (
        "Qwen2Config",
        "Qwen2ForCausalLM",
        {"use_sliding_window": False},
        torch.bfloat16,
        None,
    ),
    "qwen3_f32": (
        "Qwen3Config",
        "Qwen3ForCausalLM",
        {"head_dim": 8, "num_key_value_heads": 2},
        torch.float32,
        None,
    ),
    # head_dim other than hidden / heads (as Qwen3 0.6B): q wider than x
    "qwen3_hd16_f32": (
        "Qwen3Config",
        "Qwen3ForCausalLM",
        {"head_dim": 16, "num_key_value_heads": 2},
        torch.float32,
        None,
    ),
    "qwen3_tied_bf16": (
        "Qwen3Config",
        "Qwen3ForCausalLM",
        {"head_dim": 8, "tie_word_embeddings": True},
        torch.bfloat16,
        None,
    ),
    "mistral_f32": (
        "MistralConfig",
        "MistralForCausalLM",
        {"sliding_window": None, "rope_theta": 1000000.0},
        torch.float32,
        None,
    ),
}


def build(name, spec, seed):
    cfg_cls, model_cls, overrides, dtype, _ = spec
    kw = dict(BASE)
    kw.update(overrides)
    rope_scaling = kw.pop("rope_scaling", None)
    rope_theta = kw.pop("rope_theta", 10000.0)
    config = getattr(transformers, cfg_cls)(**kw)
    # transformers 5 keeps the rope in rope_parameters
    params = {"rope_type": "default", "rope_theta": rope_theta}
    if rope_scaling:
        params.update(rope_scaling)
    config.rope_parameters = params
    torch.manual_seed(seed)
    model = getattr(transformers, model_cls)(config).eval()
    # transformers starts norms at one and biases at zero, where a norm
    # or bias read wrongly (or not at all) would not show: make them random.
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if pname.endswith("norm.weight"):
                p.normal_(1.0, 0.3)
            elif pname.endswith(".bias"):
                p.normal_(0.0, 0.3)
    if dtype != torch.float32:
        # round the weights to the file's type, compute from those values
        model = model.to(dtype)
    return model


def greedy(model, prompt):
    ref = model
    with torch.no_grad():
        out = ref.generate(
            torch.tensor([prompt]),
            do_sample=False,
            max_new_tokens=NEW_TOKENS,
            min_new_tokens=NEW_TOKENS,
            eos_token_id=None,
            pad_token_id=0,
        )
        tokens = out[0].tolist()
        logits = ref(torch.tensor([tokens])).logits[0].float()
    top2 = torch.topk(logits[PROMPT_LEN - 1 : -1], 2, dim=-1).values
    margin = float((top2[:, 0] - top2[:, 1]).min())
    return tokens, logits[:-1].contiguous(), margin


def main():
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    lines = []
    for name, spec in CASES.items():
        for seed in range(1, 50):
            model = build(name, spec, seed)
            g = torch.Generator().manual_seed(1000 + seed)
            prompt = torch.randint(3, BASE["vocab_size"], (PROMPT_LEN,), generator=g).tolist()
            # save before widening: the file keeps the case's dtype
            case_dir = os.path.join(out_dir, name)
            os.makedirs(case_dir, exist_ok=True)
            save_kw = {}
            if spec[4]:
                save_kw["max_shard_size"] = spec[4]
            model.save_pretrained(os.path.join(case_dir, "model"), **save_kw)
            if spec[3] != torch.float32:
                # the saved 16-bit weights, widened to float32 by
                # transformers' own loader (model.float() would also widen
                # buffers that .to(bfloat16) rounded, such as inv_freq)
                model = getattr(transformers, spec[1]).from_pretrained(
                    os.path.join(case_dir, "model"), dtype=torch.float32
                ).eval()
            tokens, logits, margin = greedy(model, prompt)
            if margin > MIN_MARGIN:
                break
        else:
            raise SystemExit(f"{name}: no seed gave a clear greedy path")
        logits.numpy().astype("<f4").tofile(os.path.join(case_dir, "logits.f32"))
        cfg = model.config
        with open(os.path.join(case_dir, "ref.json"), "w") as f:
            json.dump(
                {
                    "tokens": tokens,
                    "n_prompt": PROMPT_LEN,
                    "vocab_size": cfg.vocab_size,
                    "dtype": str(spec[3]).replace("torch.", ""),
                    "min_margin": margin,
                    "seed": seed,
                },
                f,
            )
        lines.append(f"{name} {cfg.num_attention_heads} {cfg.num_key_value_heads}")
        print(f"{name}: seed {seed}, {len(tokens)} tokens, min top-2 margin {margin:.4f}")
    with open(os.path.join(out_dir, "cases.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("transformers", transformers.__version__, "torch", torch.__version__)


def reference_of(model_dir, case_dir):
    model = transformers.AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=torch.float32
    ).eval()
    vocab = model.config.vocab_size
    for seed in range(1, 200):
        g = torch.Generator().manual_seed(2000 + seed)
        prompt = torch.randint(3, vocab - 8, (PROMPT_LEN,), generator=g).tolist()
        tokens, logits, margin = greedy(model, prompt)
        if margin > MIN_MARGIN:
            break
    else:
        raise SystemExit(f"{model_dir}: no prompt gave a clear greedy path")
    os.makedirs(case_dir, exist_ok=True)
    logits.numpy().astype("<f4").tofile(os.path.join(case_dir, "logits.f32"))
    with open(os.path.join(case_dir, "ref.json"), "w") as f:
        json.dump({"tokens": tokens, "n_prompt": PROMPT_LEN,
                   "vocab_size": vocab, "min_margin": margin, "seed": seed}, f)
    print(f"{model_dir}: {type(model).__name__}, prompt seed {seed}, "
          f"min top-2 margin {margin:.4f}")


if __name__ == "__main__":
    if sys.argv[1] == "--from":
        reference_of(sys.argv[2], sys.argv[3])
    else:
        main()
