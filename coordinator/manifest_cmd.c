/*
 * coordinator/manifest_cmd.c - `shardlm manifest` and `shardlm keygen
 * --sign`; see manifest_cmd.h and model/manifest.h.
 *
 * Key material is named by file only: no flag takes a key's bytes, and no
 * environment variable is read.
 */
#include "coordinator/manifest_cmd.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "model/hf_model.h"
#include "model/manifest.h"

static int fail_exit(slm_status rc)
{
    fprintf(stderr, "shardlm: %s (%s)\n", slm_error_message(),
            slm_status_str(rc));
    return 1;
}

static void manifest_usage(FILE *f)
{
    fprintf(f,
            "usage: shardlm manifest --out M [--sign SECRET_KEY] FILE...\n"
            "       shardlm manifest --verify M [--public-key PUB] "
            "[FILE...]\n"
            "  --out writes M, a SHA-256 manifest of the FILEs, which must\n"
            "  lie in M's directory; with --sign, also M.sig, an Ed25519\n"
            "  signature made with SECRET_KEY (from `shardlm keygen --sign`,\n"
            "  mode 0600). Neither file may exist already.\n"
            "  --verify hashes every file M lists and compares it; with\n"
            "  --public-key, first checks M.sig against PUB (an unsigned M is\n"
            "  then refused). Each FILE given must be one M lists.\n"
            "  A FILE that is a Hugging Face model directory stands for the\n"
            "  files of it that shardlm reads (config.json, *.safetensors,\n"
            "  the index, tokenizer files).\n");
}

static void keygen_usage(FILE *f)
{
    fprintf(f, "usage: shardlm keygen --sign PREFIX\n"
               "  Writes an Ed25519 key pair for signing manifests:\n"
               "  PREFIX.secret (mode 0600; keep it off the serving machines)\n"
               "  and PREFIX.public. Neither may exist already.\n");
}

static double mb_per_s(uint64_t bytes, double s)
{
    return s > 0 ? (double)bytes / s / 1e6 : 0.0;
}

static int manifest_run(const char *out, const char *verify, const char *sign,
                        const char *pub, const char *const *files, size_t n,
                        slm_status rc);

int slm_manifest_main(int argc, char **argv)
{
    enum { O_OUT = 256, O_VERIFY, O_SIGN, O_PUBLIC };
    static const struct option opts[] = {
        {"out", required_argument, NULL, O_OUT},
        {"verify", required_argument, NULL, O_VERIFY},
        {"sign", required_argument, NULL, O_SIGN},
        {"public-key", required_argument, NULL, O_PUBLIC},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *out = NULL, *verify = NULL, *sign = NULL, *pub = NULL;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case O_OUT:
            out = optarg;
            break;
        case O_VERIFY:
            verify = optarg;
            break;
        case O_SIGN:
            sign = optarg;
            break;
        case O_PUBLIC:
            pub = optarg;
            break;
        case 'h':
            manifest_usage(stdout);
            return 0;
        default:
            manifest_usage(stderr);
            return 2;
        }
    }
    /* A directory argument is a Hugging Face model: its files. */
    char **list = NULL;
    size_t n = 0, cap = 0;
    slm_status rc = SLM_OK;
    for (int i = optind; i < argc && rc == SLM_OK; i++) {
        char **dir_files = NULL;
        size_t n_dir = 0;
        struct stat st;
        const bool is_dir = stat(argv[i], &st) == 0 && S_ISDIR(st.st_mode);
        if (is_dir)
            rc = slm_hf_model_files(argv[i], &dir_files, &n_dir);
        const size_t add = is_dir ? n_dir : 1;
        if (rc == SLM_OK && n + add > cap) {
            cap = 2 * (n + add);
            char **grown = realloc(list, cap * sizeof *grown);
            if (!grown)
                rc = slm_fail(SLM_ERR_NOMEM, "out of memory");
            else
                list = grown;
        }
        for (size_t k = 0; rc == SLM_OK && k < add; k++) {
            list[n] = strdup(is_dir ? dir_files[k] : argv[i]);
            if (!list[n])
                rc = slm_fail(SLM_ERR_NOMEM, "out of memory");
            else
                n++;
        }
        slm_hf_model_files_free(dir_files, n_dir);
    }
    const char *const *files = (const char *const *)list;
    int code = manifest_run(out, verify, sign, pub, files, n, rc);
    slm_hf_model_files_free(list, n);
    return code;
}

/* The rest of `shardlm manifest` on the expanded file list; rc: the
 * expansion's status. */
static int manifest_run(const char *out, const char *verify, const char *sign,
                        const char *pub, const char *const *files, size_t n,
                        slm_status rc)
{
    if (rc != SLM_OK)
        return fail_exit(rc);
    const char *problem = NULL;
    if ((!out) == (!verify))
        problem = "exactly one of --out and --verify is required";
    else if (out && pub)
        problem = "--public-key goes with --verify";
    else if (verify && sign)
        problem = "--sign goes with --out";
    else if (out && n == 0)
        problem = "--out needs the files to list";
    if (problem) {
        fprintf(stderr, "shardlm manifest: %s\n", problem);
        manifest_usage(stderr);
        return 2;
    }
    slm_manifest_report rep;
    if (out) {
        rc = slm_manifest_write(out, files, n, sign, &rep);
        if (rc != SLM_OK)
            return fail_exit(rc);
        fprintf(stderr,
                "shardlm: wrote %s: %zu files, %llu bytes hashed in %.3f s "
                "(%.0f MB/s)%s%s%s\n",
                out, rep.files, (unsigned long long)rep.bytes, rep.seconds,
                mb_per_s(rep.bytes, rep.seconds),
                rep.signed_out ? "; signed: " : "; unsigned",
                rep.signed_out ? out : "", rep.signed_out ? ".sig" : "");
        return 0;
    }
    rc = slm_manifest_verify(verify, pub, files, n, &rep);
    if (rc != SLM_OK)
        return fail_exit(rc);
    fprintf(stderr,
            "shardlm: %s: %zu files verified, %llu bytes hashed in %.3f s "
            "(%.0f MB/s); %s\n",
            verify, rep.files, (unsigned long long)rep.bytes, rep.seconds,
            mb_per_s(rep.bytes, rep.seconds),
            rep.signature_verified ? "signature good"
                                   : "signature not checked (no --public-key)");
    return 0;
}

int slm_keygen_sign_main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"sign", required_argument, NULL, 's'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *prefix = NULL;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (c == 's') {
            prefix = optarg;
        } else if (c == 'h') {
            keygen_usage(stdout);
            return 0;
        } else {
            keygen_usage(stderr);
            return 2;
        }
    }
    if (!prefix || optind != argc || prefix[0] == '\0') {
        fprintf(stderr, "shardlm keygen: --sign PREFIX is required, and "
                        "nothing else\n");
        keygen_usage(stderr);
        return 2;
    }
    slm_status rc = slm_manifest_keygen(prefix);
    if (rc != SLM_OK)
        return fail_exit(rc);
    fprintf(stderr,
            "shardlm: wrote %s.secret (mode 0600: sign with it, keep it "
            "private) and %s.public (verify with it)\n",
            prefix, prefix);
    return 0;
}

slm_status slm_manifest_check_inputs(const char *manifest,
                                     const char *public_key, const char *model,
                                     const char *tokenizer, const char *who,
                                     bool say)
{
    if (!manifest) {
        if (public_key)
            return slm_fail(SLM_ERR_INVALID,
                            "--public-key needs --manifest: the key checks "
                            "the manifest's signature");
        return SLM_OK;
    }
    /* A Hugging Face model is all the files of it that we read; a
     * llama2.c model one file. The tokenizer when named apart. */
    char **files = NULL;
    size_t n_files = 0;
    if (slm_hf_model_is_hf(model)) {
        SLM_CHECK(slm_hf_model_files(model, &files, &n_files));
    } else {
        files = calloc(1, sizeof *files);
        if (!files || !(files[0] = strdup(model))) {
            free(files);
            return slm_fail(SLM_ERR_NOMEM, "out of memory");
        }
        n_files = 1;
    }
    const char **cover = calloc(n_files + 1, sizeof *cover);
    if (!cover) {
        slm_hf_model_files_free(files, n_files);
        return slm_fail(SLM_ERR_NOMEM, "out of memory");
    }
    for (size_t i = 0; i < n_files; i++)
        cover[i] = files[i];
    size_t n_cover = n_files;
    if (tokenizer)
        cover[n_cover++] = tokenizer;
    slm_manifest_report rep = {0};
    slm_status rc =
        slm_manifest_verify(manifest, public_key, cover, n_cover, &rep);
    free(cover);
    slm_hf_model_files_free(files, n_files);
    SLM_CHECK(rc);
    if (say)
        fprintf(stderr,
                "%s: manifest verified%s: %zu files, %.1f MiB hashed in "
                "%.2f s\n",
                who, rep.signature_verified ? " (signature good)" : "",
                rep.files, (double)rep.bytes / 1048576.0, rep.seconds);
    return SLM_OK;
}
