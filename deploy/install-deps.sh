#!/usr/bin/env bash
# Installs the Debian packages shardlm needs to build and test, and nothing
# else. Idempotent: packages already installed are skipped, and apt is not
# touched at all when nothing is missing. Runs apt through sudo when not root.
#
# The CUDA toolkit is not a Debian package here: where nvcc is on PATH the
# build adds the CUDA kernels, otherwise it is CPU-only.
set -euo pipefail

packages=(
    cmake         # build system
    make          # CMake's generator
    gcc           # compiler, with OpenMP (libgomp) and ASan/UBSan runtimes
    libc6-dev     # C headers
    pkg-config    # locates cmocka
    libcmocka-dev # unit tests
    openmpi-bin   # mpirun: launches the ranks of a cluster
    libopenmpi-dev # MPI: bootstrap and the CPU collectives
    libzmq3-dev   # ZeroMQ: the control plane
    libprotobuf-c-dev # protobuf-c runtime: control messages
    protobuf-c-compiler # protoc-c: generates their C code
    libjansson-dev # JSON: the JSONL batch format
    libpcre2-dev  # the split regexes of Hugging Face tokenizer.json files
    libutf8proc-dev # Unicode NFC for tokenizer.json normalizers (Qwen2)
    libsodium-dev # SHA-256 and Ed25519: model manifests and their signatures
    jq            # tests: reading JSONL results
    python3-venv  # tests/reference/venv.sh: the pinned transformers + torch
    clang         # tests/fuzz/run.sh: libFuzzer targets with ASan+UBSan
    libclang-rt-14-dev # libFuzzer's and the sanitizers' runtimes for clang
    libomp-14-dev # tests/tsan.sh: LLVM's OpenMP runtime and its Archer tool,
                  # which shows OpenMP's synchronisation to ThreadSanitizer
    # Slurm (deploy/slurm/*.sbatch; tests/integration/slurm_batch.sh runs a
    # private one-node cluster of these daemons). Installing them configures
    # no cluster: without /etc/slurm/slurm.conf slurmctld and slurmd stay
    # down; on a systemd machine the munge service starts with a fresh key.
    slurmctld     # Slurm's controller daemon
    slurmd        # Slurm's node daemon: starts the job steps
    slurm-client  # sbatch, srun, squeue, scontrol, scancel, sinfo
    slurm-wlm-basic-plugins # Slurm's plugins, mpi/pmix among them: Debian's
                  # Open MPI has no PMI-2, so srun starts its ranks with --mpi=pmix
    libpmix-dev   # pmix2/lib/libpmix.so, the unversioned name the mpi/pmix
                  # plugin dlopens (libpmix2 alone has only libpmix.so.2)
    munge         # munged: the credentials Slurm's daemons and commands exchange
)

missing=()
for p in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done
if [ ${#missing[@]} -eq 0 ]; then
    echo "install-deps: all ${#packages[@]} packages present"
    exit 0
fi

sudo=()
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "install-deps: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
    sudo=(sudo)
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
