#!/usr/bin/env bash
# Broken Hugging Face directories through the real command line: `shardlm
# generate --model DIR` must refuse each with a message naming the file and
# the field (or tensor), exit non-zero without a crash (no signal, no
# sanitizer report: the suite runs this under ASan+UBSan too), and never get
# as far as generating. Starts from a valid model of the references
# (tests/reference/hf_refs.sh): llama_f32, and llama_sharded_f32 for the
# index. Cases: the safetensors truncated at 40 offsets, a huge header
# length, overlapping offsets, an unknown dtype, a shape config.json does
# not have, a layer whose tensors are missing, an unknown tensor, config.json
# missing, garbage, with a field missing or mistyped, of another
# architecture, quantized, with an unknown rope type; an index naming a
# shard that is not there, or a file outside the directory; a tokenizer.json
# (mkmodel's) of another model type, with an unknown split regex, an id past
# the vocabulary, no model, a merge of unknown pieces, a duplicate id, a bad
# added token, cut at 4 lengths, or missing.
source "$(dirname "$0")/../lib.sh"
require "$models/tok512.bin"
here=$(cd "$(dirname "$0")/.." && pwd)
venv=$(bash "$here/reference/venv.sh") && refs=$(bash "$here/reference/hf_refs.sh") || {
    [ "${CI:-}" = true ] && { echo "FAIL: the references could not be made"; exit 1; }
    echo "SKIP: the references could not be made"
    exit 77
}
py=$venv/bin/python
good=$refs/llama_f32/model

# refused NAME DIR NEEDLE...: generate on DIR fails cleanly, naming each.
refused() {
    local name=$1 dir=$2 rc n
    shift 2
    "$bin" generate "${asroot[@]}" --model "$dir" "${tokenizer_args[@]}" \
        --prompt "Once" -n 8 >"$tmp/out" 2>"$tmp/err"
    rc=$?
    if [ $rc -eq 0 ] || [ $rc -ge 128 ]; then
        fail "$name: exit $rc (want a refusal): $(head -c 300 "$tmp/err")"
        return
    fi
    if grep -Eq "$sanitizer_report" "$tmp/err"; then
        fail "$name: sanitizer report"; head -20 "$tmp/err"; return
    fi
    for n in "$@"; do
        if ! grep -qF -- "$n" "$tmp/err"; then
            fail "$name: the message does not name '$n': $(head -c 300 "$tmp/err")"
            return
        fi
    done
    pass
}

# the llama2.c tokenizer for the references, which have no tokenizer.json
tokenizer_args=(--tokenizer "$models/tok512.bin")

# fresh NAME: a copy of the good model to break
fresh() { rm -rf "$tmp/$1"; cp -r "$good" "$tmp/$1"; echo "$tmp/$1"; }

# The valid model is accepted by this same command (else every refusal
# below would prove nothing).
check "the unbroken model generates" "$bin" generate "${asroot[@]}" --model "$good" \
    --tokenizer "$models/tok512.bin" --prompt "Once" -n 8

st=$good/model.safetensors
size=$(stat -c %s "$st")
hlen=$("$py" -c 'import struct,sys; print(struct.unpack("<Q", open(sys.argv[1],"rb").read(8))[0])' "$st")
# truncation at 40 offsets: inside the length, the header, its end, the data
offsets="0 1 7 8 9 $((hlen / 2)) $((hlen + 7)) $((hlen + 8)) $((hlen + 9))"
for i in $(seq 1 31); do offsets+=" $((hlen + 8 + (size - hlen - 8) * i / 32))"; done
offsets+=" $((size - 1))"
n=0
for off in $offsets; do
    d=$(fresh trunc)
    head -c "$off" "$st" >"$d/model.safetensors"
    refused "truncated at $off of $size" "$d" "model.safetensors"
    n=$((n + 1))
done
check "truncations tried ($n)" test "$n" -ge 40

# edit_header DIR PYTHON: runs PYTHON on h (the header, a dict) and writes
# the file back with the same data section.
edit_header() {
    "$py" - "$1/model.safetensors" "$2" <<'PY'
import json, struct, sys
path, code = sys.argv[1], sys.argv[2]
raw = open(path, "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
h = json.loads(raw[8 : 8 + n])
data = raw[8 + n :]
exec(code)
b = json.dumps(h).encode()
open(path, "wb").write(struct.pack("<Q", len(b)) + b + data)
PY
}
d=$(fresh huge)
"$py" -c 'import struct,sys; p=sys.argv[1]; r=open(p,"rb").read(); open(p,"wb").write(struct.pack("<Q", 1 << 62) + r[8:])' "$d/model.safetensors"
refused "huge header length" "$d" "model.safetensors" "header"
d=$(fresh overlap)
edit_header "$d" 'k = sorted(x for x in h if x != "__metadata__"); h[k[1]]["data_offsets"] = h[k[0]]["data_offsets"]'
refused "overlapping offsets" "$d" "model.safetensors"
d=$(fresh overflow)
edit_header "$d" 'k = sorted(x for x in h if x != "__metadata__"); h[k[0]]["data_offsets"] = [0, 2**64 - 1]'
refused "offsets past the end" "$d" "model.safetensors"
d=$(fresh dtype)
edit_header "$d" 'h["model.norm.weight"]["dtype"] = "I32"'
refused "an unknown dtype" "$d" "model.norm.weight" "I32"
d=$(fresh shape)
edit_header "$d" 's = h["model.norm.weight"]["shape"]; h["model.norm.weight"]["shape"] = [s[0] // 2, 2]'
refused "a shape of the wrong rank" "$d" "model.norm.weight" "shape"
d=$(fresh layers)
"$py" -c 'import json,sys; p=sys.argv[1]; c=json.load(open(p)); c["num_hidden_layers"] += 1; json.dump(c, open(p,"w"))' "$d/config.json"
refused "a layer's tensors missing" "$d" "model.layers.3." "missing"
d=$(fresh unknown)
"$py" -c 'import json,sys; p=sys.argv[1]; c=json.load(open(p)); c["num_hidden_layers"] -= 1; json.dump(c, open(p,"w"))' "$d/config.json"
refused "a tensor this architecture lacks" "$d" "model.layers.2." "not part of this architecture"
d=$(fresh hidden)
"$py" -c 'import json,sys; p=sys.argv[1]; c=json.load(open(p)); c["intermediate_size"] += 2; json.dump(c, open(p,"w"))' "$d/config.json"
refused "a size config.json disagrees with" "$d" "mlp.gate_proj.weight" "shape"

# config.json
d=$(fresh noconfig); rm "$d/config.json"
refused "config.json missing" "$d" "config.json"
d=$(fresh garbage); printf '{"architectures": ["LlamaForCausalLM"], "hidden_size": 6' >"$d/config.json"
refused "config.json truncated" "$d" "config.json" "not valid JSON"
for field in hidden_size num_attention_heads vocab_size architectures; do
    d=$(fresh "no_$field")
    "$py" -c 'import json,sys; p=sys.argv[1]; c=json.load(open(p)); del c[sys.argv[2]]; json.dump(c, open(p,"w"))' "$d/config.json" "$field"
    refused "config.json without $field" "$d" "config.json" "'$field'"
done
# set DIR FIELD JSON: config.json with FIELD = JSON
set_field() {
    "$py" -c 'import json,sys; p=sys.argv[1]; c=json.load(open(p)); c[sys.argv[2]] = json.loads(sys.argv[3]); json.dump(c, open(p,"w"))' "$1/config.json" "$2" "$3"
}
d=$(fresh mistyped); set_field "$d" hidden_size '"64"'
refused "hidden_size a string" "$d" "config.json" "'hidden_size' is not an integer"
d=$(fresh arch); set_field "$d" architectures '["GPT2LMHeadModel"]'
refused "another architecture" "$d" "config.json" "'GPT2LMHeadModel' is not supported"
d=$(fresh quant); set_field "$d" quantization_config '{"quant_method": "gptq", "bits": 4}'
refused "a quantized checkpoint" "$d" "config.json" "quantization_config"
d=$(fresh rope); set_field "$d" rope_parameters '{"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0}'
refused "an unknown rope type" "$d" "config.json" "rope type 'yarn'"

# the index of a sharded checkpoint
sharded=$refs/llama_sharded_f32/model
check "the sharded reference has several files" test "$(ls "$sharded"/*.safetensors | wc -l)" -ge 2
rm -rf "$tmp/noshard"; cp -r "$sharded" "$tmp/noshard"
gone=$(ls "$tmp/noshard"/model-*.safetensors | tail -1)
rm "$gone"
refused "an index naming a missing shard" "$tmp/noshard" "$(basename "$gone")"
rm -rf "$tmp/escape"; cp -r "$sharded" "$tmp/escape"
"$py" -c 'import json,sys; p=sys.argv[1]; c=json.load(open(p)); k=sorted(c["weight_map"])[0]; c["weight_map"][k]="../"+c["weight_map"][k]; json.dump(c, open(p,"w"))' "$tmp/escape/model.safetensors.index.json"
refused "an index reaching outside its directory" "$tmp/escape" "model.safetensors.index.json"

# tokenizer.json: a directory's own tokenizer (no --tokenizer), from
# mkmodel's Llama 3-style directory, broken field by field
"$bin" mkmodel --format hf --arch llama3 --dim 64 --hidden 160 --layers 2 --heads 8 \
    --kv-heads 4 --vocab 512 --seq-len 128 --out "$tmp/tokgood" 2>/dev/null
check "the unbroken tokenizer.json generates" "$bin" generate "${asroot[@]}" \
    --model "$tmp/tokgood" --prompt "Once" -n 8
refused_tok() { # NAME PYTHON-EDIT-OF-t NEEDLE...: the edited file is refused
    local name=$1 edit=$2 d=$tmp/tok-$1
    shift 2
    rm -rf "$d"; cp -r "$tmp/tokgood" "$d"
    "$py" -c "import json,sys; p=sys.argv[1]; t=json.load(open(p)); $edit; json.dump(t, open(p, 'w'))" \
        "$d/tokenizer.json"
    tokenizer_args=()
    refused "tokenizer.json: $name" "$d" "tokenizer.json" "$@"
}
tokenizer_args=(--tokenizer "$models/tok512.bin")
refused_tok wordpiece 't["model"]["type"]="WordPiece"' 'model.type' 'WordPiece'
refused_tok regex 't["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"]="(a+)+b"' \
    'not one of the known split patterns'
refused_tok big-id 't["model"]["vocab"]["zz_new"]=9999' 'model.vocab' 'zz_new'
refused_tok no-model 'del t["model"]' 'model: missing'
refused_tok merge 't["model"]["merges"].append(["qqq","www"])' 'model.merges[' 'qqq'
refused_tok duplicate-id 'k=list(t["model"]["vocab"])[300]; t["model"]["vocab"][k]=5' \
    'id 5 is given twice'
refused_tok added-token 't["added_tokens"][0]["id"]=-3' 'added_tokens'
for cut in 0 1 100 5000; do
    rm -rf "$tmp/tokcut"; cp -r "$tmp/tokgood" "$tmp/tokcut"
    head -c "$cut" "$tmp/tokgood/tokenizer.json" >"$tmp/tokcut/tokenizer.json"
    tokenizer_args=()
    refused "tokenizer.json cut at $cut bytes" "$tmp/tokcut" "tokenizer.json"
done
rm "$tmp/tokcut/tokenizer.json"
refused "no tokenizer.json" "$tmp/tokcut" "tokenizer.json" "cannot open"
finish
