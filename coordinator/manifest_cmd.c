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
#include <string.h>

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
            "  then refused). Each FILE given must be one M lists.\n");
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
    const char *const *files = (const char *const *)argv + optind;
    const size_t n = (size_t)(argc - optind);
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
    slm_status rc;
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
    const char *cover[2] = {model, tokenizer};
    slm_manifest_report rep = {0};
    SLM_CHECK(slm_manifest_verify(manifest, public_key, cover, 2, &rep));
    if (say)
        fprintf(stderr,
                "%s: manifest verified%s: %zu files, %.1f MiB hashed in "
                "%.2f s\n",
                who, rep.signature_verified ? " (signature good)" : "",
                rep.files, (double)rep.bytes / 1048576.0, rep.seconds);
    return SLM_OK;
}
