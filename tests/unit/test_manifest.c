/*
 * tests/unit/test_manifest.c - model/manifest.c and common/keyfile.c: round
 * trips, every kind of change to a listed file, signatures (good, wrong,
 * another key's, missing, over a changed manifest), hostile manifest text,
 * path tricks, key file permissions, and the command-line entry points.
 *
 * Self-contained: builds its files in a fresh temporary directory; needs no
 * shared model.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/keyfile.h"
#include "coordinator/manifest_cmd.h"
#include "model/manifest.h"
#include "tests/testutil.h"

/* ------------------------------------------------------------------------ */
/* A scratch directory per test                                               */

typedef struct {
    char dir[256];
    int next;
} scratch;

static scratch S;
static char paths[1024][512]; /* scratch for P(): a ring long enough that
                               * no test reuses a path it still holds */

/* "<dir>/<name>", in one of 1024 rotating buffers. */
static const char *P(const char *name)
{
    char *p = paths[S.next++ % 1024];
    int n = snprintf(p, sizeof paths[0], "%s/%s", S.dir, name);
    assert_true(n > 0 && (size_t)n < sizeof paths[0]);
    return p;
}

static void write_file(const char *path, const void *data, size_t len,
                       mode_t mode)
{
    unlink(path);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, data, len), (ssize_t)len);
    assert_int_equal(fchmod(fd, mode), 0);
    assert_int_equal(close(fd), 0);
}

static void write_str(const char *path, const char *s)
{
    write_file(path, s, strlen(s), 0644);
}

static size_t read_file(const char *path, char *buf, size_t cap)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    size_t n = fread(buf, 1, cap - 1, f);
    buf[n] = '\0';
    fclose(f);
    return n;
}

static void random_bytes(uint8_t *p, size_t n, uint64_t seed)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)slm_test_rand_u64(&seed);
}

static int setup(void **state)
{
    (void)state;
    const char *tmp = getenv("TMPDIR");
    snprintf(S.dir, sizeof S.dir, "%s/slmmanifestXXXXXX",
             tmp && *tmp ? tmp : "/tmp");
    assert_non_null(mkdtemp(S.dir));
    S.next = 0;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    DIR *d = opendir(S.dir);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                continue;
            const char *p = P(e->d_name);
            if (rmdir(p) != 0)
                unlink(p);
        }
        closedir(d);
    }
    rmdir(S.dir);
    return 0;
}

#define MODEL_BYTES (64 * 1024 + 7)
static uint8_t model[MODEL_BYTES];

/* stories260K.bin (random, MODEL_BYTES) and tok512.bin (small) in S.dir. */
static void make_model_files(void)
{
    random_bytes(model, sizeof model, 42);
    write_file(P("stories260K.bin"), model, sizeof model, 0644);
    write_str(P("tok512.bin"), "not really a tokenizer\n");
}

static void expect_fail(slm_status rc, slm_status want, const char *needle)
{
    if (rc != want || !strstr(slm_error_message(), needle))
        fail_msg("status %d (want %d), message '%s' (want '%s')", rc, want,
                 slm_error_message(), needle);
}

static slm_status verify(const char *pub, bool cover)
{
    const char *must[2] = {P("stories260K.bin"), P("tok512.bin")};
    slm_manifest_report rep;
    return slm_manifest_verify(P("manifest.txt"), pub, must, cover ? 2 : 0,
                               &rep);
}

static void write_unsigned_manifest(void)
{
    const char *files[2] = {P("tok512.bin"), P("stories260K.bin")};
    assert_int_equal(
        slm_manifest_write(P("manifest.txt"), files, 2, NULL, NULL), SLM_OK);
}

/* ------------------------------------------------------------------------ */
/* Round trip and file changes                                                */

static void test_round_trip(void **state)
{
    (void)state;
    make_model_files();
    const char *files[2] = {P("tok512.bin"), P("stories260K.bin")};
    slm_manifest_report rep;
    assert_int_equal(
        slm_manifest_write(P("manifest.txt"), files, 2, NULL, &rep), SLM_OK);
    assert_int_equal(rep.files, 2);
    assert_false(rep.signed_out);
    assert_int_equal(access(P("manifest.txt.sig"), F_OK), -1);

    /* The exact text: sorted names, lowercase digests from libsodium. */
    uint8_t d1[32], d2[32];
    crypto_hash_sha256(d1, model, sizeof model);
    const char *tok = "not really a tokenizer\n";
    crypto_hash_sha256(d2, (const uint8_t *)tok, strlen(tok));
    char h1[65], h2[65], want[1024], got[1024];
    sodium_bin2hex(h1, sizeof h1, d1, 32);
    sodium_bin2hex(h2, sizeof h2, d2, 32);
    snprintf(want, sizeof want,
             "shardlm-manifest 1\nsha256 %s %d stories260K.bin\nsha256 %s "
             "%zu tok512.bin\n",
             h1, MODEL_BYTES, h2, strlen(tok));
    size_t n = read_file(P("manifest.txt"), got, sizeof got);
    assert_string_equal(got, want);

    /* parse -> format is the identity on the writer's output. */
    slm_manifest_t *m = NULL;
    assert_int_equal(
        slm_manifest_parse((const uint8_t *)got, n, "manifest.txt", &m),
        SLM_OK);
    assert_int_equal(slm_manifest_count(m), 2);
    const slm_manifest_entry *e = slm_manifest_find(m, "stories260K.bin");
    assert_non_null(e);
    assert_int_equal(e->size, MODEL_BYTES);
    assert_memory_equal(e->sha256, d1, 32);
    assert_null(slm_manifest_find(m, "nope"));
    char *text = NULL;
    size_t len = 0;
    assert_int_equal(slm_manifest_format(m, &text, &len), SLM_OK);
    assert_int_equal(len, n);
    assert_memory_equal(text, got, n);
    free(text);
    slm_manifest_destroy(&m);
    assert_null(m);

    memset(&rep, 0, sizeof rep);
    const char *must[2] = {P("stories260K.bin"), P("tok512.bin")};
    assert_int_equal(
        slm_manifest_verify(P("manifest.txt"), NULL, must, 2, &rep), SLM_OK);
    assert_int_equal(rep.files, 2);
    assert_int_equal(rep.bytes, MODEL_BYTES + strlen(tok));
    assert_false(rep.signature_verified);
    assert_true(rep.seconds >= 0.0);

    /* A relative manifest path (directory ".") works too. */
    char cwd[1024];
    assert_non_null(getcwd(cwd, sizeof cwd));
    assert_int_equal(chdir(S.dir), 0);
    const char *rel[1] = {"stories260K.bin"};
    assert_int_equal(slm_manifest_verify("manifest.txt", NULL, rel, 1, &rep),
                     SLM_OK);
    assert_int_equal(chdir(cwd), 0);

    /* Never overwrites. */
    expect_fail(slm_manifest_write(P("manifest.txt"), files, 2, NULL, NULL),
                SLM_ERR_IO, "already exists");
}

static void flip(const char *path, size_t off, uint8_t mask)
{
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    uint8_t b;
    assert_int_equal(pread(fd, &b, 1, (off_t)off), 1);
    b ^= mask;
    assert_int_equal(pwrite(fd, &b, 1, (off_t)off), 1);
    close(fd);
}

static void test_every_flip_is_caught(void **state)
{
    (void)state;
    make_model_files();
    write_unsigned_manifest();
    assert_int_equal(verify(NULL, true), SLM_OK);
    /* The first and last bytes, the block boundaries of the 1 MiB read and
     * SHA-256's 64-byte blocks nearby, and 300 random offsets; each bit of
     * the byte in turn, and all of them. */
    size_t offs[340];
    size_t n = 0;
    const size_t fixed[] = {0,
                            1,
                            63,
                            64,
                            65,
                            4095,
                            4096,
                            MODEL_BYTES / 2,
                            MODEL_BYTES - 65,
                            MODEL_BYTES - 64,
                            MODEL_BYTES - 2,
                            MODEL_BYTES - 1};
    for (size_t i = 0; i < sizeof fixed / sizeof *fixed; i++)
        offs[n++] = fixed[i];
    uint64_t seed = 7;
    while (n < 312)
        offs[n++] = (size_t)(slm_test_rand_u64(&seed) % MODEL_BYTES);
    for (size_t i = 0; i < n; i++) {
        const uint8_t mask = i % 9 == 8 ? 0xff : (uint8_t)(1u << (i % 9));
        flip(P("stories260K.bin"), offs[i], mask);
        expect_fail(verify(NULL, true), SLM_ERR_FORMAT,
                    "stories260K.bin: SHA-256 differs from ");
        expect_fail(verify(NULL, false), SLM_ERR_FORMAT,
                    "/manifest.txt (file changed or corrupted)");
        flip(P("stories260K.bin"), offs[i], mask);
    }
    assert_int_equal(verify(NULL, true), SLM_OK);
    /* The tokenizer too: the manifest covers every file it lists. */
    flip(P("tok512.bin"), 3, 0x20);
    expect_fail(verify(NULL, true), SLM_ERR_FORMAT,
                "tok512.bin: SHA-256 differs");
}

static void test_truncated_extended_missing(void **state)
{
    (void)state;
    make_model_files();
    write_unsigned_manifest();
    assert_int_equal(truncate(P("stories260K.bin"), MODEL_BYTES - 1), 0);
    expect_fail(verify(NULL, true), SLM_ERR_FORMAT,
                "stories260K.bin: size 65542 bytes differs from");
    assert_int_equal(truncate(P("stories260K.bin"), MODEL_BYTES + 1), 0);
    expect_fail(verify(NULL, true), SLM_ERR_FORMAT, "size 65544 bytes");
    assert_int_equal(truncate(P("stories260K.bin"), 0), 0);
    expect_fail(verify(NULL, true), SLM_ERR_FORMAT, "size 0 bytes");
    /* Same size, different content (a replaced file). */
    write_file(P("stories260K.bin"), model, sizeof model, 0644);
    assert_int_equal(verify(NULL, true), SLM_OK);
    unlink(P("tok512.bin"));
    expect_fail(verify(NULL, false), SLM_ERR_IO,
                "tok512.bin: cannot open: No such file");
    /* A directory or FIFO where a file was: refused, no hang. */
    assert_int_equal(mkdir(P("tok512.bin"), 0755), 0);
    expect_fail(verify(NULL, false), SLM_ERR_INVALID,
                "tok512.bin: not a regular file");
    rmdir(P("tok512.bin"));
    assert_int_equal(mkfifo(P("tok512.bin"), 0644), 0);
    expect_fail(verify(NULL, false), SLM_ERR_INVALID,
                "tok512.bin: not a regular file");
}

/* ------------------------------------------------------------------------ */
/* Signatures and keys                                                        */

static void test_signed(void **state)
{
    (void)state;
    make_model_files();
    assert_int_equal(slm_manifest_keygen(P("k")), SLM_OK);
    assert_int_equal(slm_manifest_keygen(P("other")), SLM_OK);
    struct stat st;
    assert_int_equal(stat(P("k.secret"), &st), 0);
    assert_int_equal(st.st_mode & 077, 0);
    expect_fail(slm_manifest_keygen(P("k")), SLM_ERR_IO, "already exists");

    const char *files[2] = {P("stories260K.bin"), P("tok512.bin")};
    slm_manifest_report rep;
    assert_int_equal(
        slm_manifest_write(P("manifest.txt"), files, 2, P("k.secret"), &rep),
        SLM_OK);
    assert_true(rep.signed_out);
    const char *must[2] = {P("stories260K.bin"), P("tok512.bin")};
    memset(&rep, 0, sizeof rep);
    assert_int_equal(
        slm_manifest_verify(P("manifest.txt"), P("k.public"), must, 2, &rep),
        SLM_OK);
    assert_true(rep.signature_verified);

    /* Another key's public half. */
    expect_fail(verify(P("other.public"), true), SLM_ERR_INVALID,
                "signature does not verify with");

    /* A flipped manifest byte, anywhere (the first digest digit, a size
     * digit, the header), with the key: refused by the signature, even where
     * the result would still parse and hash correctly. */
    char text[1024];
    size_t n = read_file(P("manifest.txt"), text, sizeof text);
    const size_t spots[] = {0, 19 + 7, n - 2, n - 1};
    for (size_t i = 0; i < sizeof spots / sizeof *spots; i++) {
        flip(P("manifest.txt"), spots[i], 0x01);
        expect_fail(verify(P("k.public"), true), SLM_ERR_INVALID,
                    "signature does not verify");
        flip(P("manifest.txt"), spots[i], 0x01);
    }
    /* The signature is checked before any line is trusted: garbage that
     * would fail to parse is reported as a bad signature, not a bad line. */
    write_str(P("manifest.txt"), "garbage");
    expect_fail(verify(P("k.public"), true), SLM_ERR_INVALID,
                "signature does not verify");
    expect_fail(verify(NULL, true), SLM_ERR_FORMAT, "manifest.txt line 1");
    write_file(P("manifest.txt"), text, n, 0644);
    assert_int_equal(verify(P("k.public"), true), SLM_OK);

    /* A wrong signature: a flipped bit; malformed signature files. */
    char sig[512];
    size_t sn = read_file(P("manifest.txt.sig"), sig, sizeof sig);
    flip(P("manifest.txt.sig"), sn - 10, 0x01); /* '0'<->'1', 'a'<->'`' ... */
    slm_status rc = verify(P("k.public"), true);
    assert_int_not_equal(rc, SLM_OK);
    write_file(P("manifest.txt.sig"), sig, sn - 1, 0644); /* no LF */
    expect_fail(verify(P("k.public"), true), SLM_ERR_FORMAT, "expected one");
    char upper[512];
    memcpy(upper, sig, sn);
    for (size_t i = 26; i < sn - 1; i++)
        if (upper[i] >= 'a' && upper[i] <= 'f')
            upper[i] = (char)(upper[i] - 'a' + 'A');
    write_file(P("manifest.txt.sig"), upper, sn, 0644);
    expect_fail(verify(P("k.public"), true), SLM_ERR_FORMAT, "lowercase hex");
    /* Signature over the manifest, then a line appended. */
    write_file(P("manifest.txt.sig"), sig, sn, 0644);
    assert_int_equal(verify(P("k.public"), true), SLM_OK);
    char longer[1200];
    snprintf(longer, sizeof longer, "%ssha256 %064d 0 zzz\n", text, 0);
    write_str(P("zzz"), "");
    write_str(P("manifest.txt"), longer);
    expect_fail(verify(P("k.public"), true), SLM_ERR_INVALID,
                "signature does not verify");
    assert_int_equal(verify(NULL, true), SLM_ERR_FORMAT); /* digest differs */

    /* Unsigned manifest when a key is required. */
    unlink(P("manifest.txt.sig"));
    write_file(P("manifest.txt"), text, n, 0644);
    expect_fail(verify(P("k.public"), true), SLM_ERR_INVALID, "is not signed");
    assert_int_equal(verify(NULL, true), SLM_OK);
    /* A signature file that exists blocks a signed rewrite. */
    unlink(P("manifest.txt"));
    write_str(P("manifest.txt.sig"), "x");
    expect_fail(
        slm_manifest_write(P("manifest.txt"), files, 2, P("k.secret"), NULL),
        SLM_ERR_IO, "already exists");
    assert_int_equal(access(P("manifest.txt"), F_OK), -1); /* rolled back */
}

static void test_key_files(void **state)
{
    (void)state;
    make_model_files();
    assert_int_equal(slm_manifest_keygen(P("k")), SLM_OK);
    const char *files[1] = {P("stories260K.bin")};
    const mode_t bad[] = {0644, 0640, 0604, 0660, 0602, 0610};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        assert_int_equal(chmod(P("k.secret"), bad[i]), 0);
        char want[64];
        snprintf(want, sizeof want, "secret key file has mode %04o",
                 (unsigned)bad[i]);
        expect_fail(slm_manifest_write(P("manifest.txt"), files, 1,
                                       P("k.secret"), NULL),
                    SLM_ERR_INVALID, want);
        assert_int_equal(access(P("manifest.txt"), F_OK), -1);
    }
    assert_int_equal(chmod(P("k.secret"), 0400), 0);
    assert_int_equal(
        slm_manifest_write(P("manifest.txt"), files, 1, P("k.secret"), NULL),
        SLM_OK);
    const char *must[1] = {P("stories260K.bin")};
    assert_int_equal(
        slm_manifest_verify(P("manifest.txt"), P("k.public"), must, 1, NULL),
        SLM_OK);
    /* A public key others may replace is no trust anchor. */
    assert_int_equal(chmod(P("k.public"), 0666), 0);
    expect_fail(
        slm_manifest_verify(P("manifest.txt"), P("k.public"), must, 1, NULL),
        SLM_ERR_INVALID, "public key file has mode 0666");
    assert_int_equal(chmod(P("k.public"), 0644), 0);

    /* Not regular files: a directory, a FIFO (no hang on open). */
    assert_int_equal(mkdir(P("dir.secret"), 0700), 0);
    expect_fail(slm_manifest_write(P("m2"), files, 1, P("dir.secret"), NULL),
                SLM_ERR_INVALID, "not a regular file");
    assert_int_equal(mkfifo(P("fifo.secret"), 0600), 0);
    expect_fail(slm_manifest_write(P("m2"), files, 1, P("fifo.secret"), NULL),
                SLM_ERR_INVALID, "not a regular file");
    expect_fail(slm_manifest_write(P("m2"), files, 1, P("none.secret"), NULL),
                SLM_ERR_IO, "cannot open secret key file");

    /* Malformed contents: a public key as the secret, wrong length, case. */
    char pub[256];
    size_t pn = read_file(P("k.public"), pub, sizeof pub);
    write_file(P("bad.secret"), pub, pn, 0600);
    expect_fail(slm_manifest_write(P("m2"), files, 1, P("bad.secret"), NULL),
                SLM_ERR_FORMAT, "shardlm-ed25519-secret-key ");
    write_file(P("big.public"), pub, pn - 2, 0644);
    expect_fail(
        slm_manifest_verify(P("manifest.txt"), P("big.public"), must, 1, NULL),
        SLM_ERR_FORMAT, "expected one line");
    uint8_t huge[4096];
    memset(huge, 'a', sizeof huge);
    write_file(P("huge.public"), huge, sizeof huge, 0644);
    expect_fail(
        slm_manifest_verify(P("manifest.txt"), P("huge.public"), must, 1, NULL),
        SLM_ERR_RANGE, "at most 128 expected");

    /* keyfile itself: exclusive create, the mode it promises. */
    uint8_t buf[16];
    size_t len = 99;
    assert_int_equal(
        slm_keyfile_write_new(P("x.secret"), SLM_KEYFILE_SECRET, "abc", 3),
        SLM_OK);
    expect_fail(
        slm_keyfile_write_new(P("x.secret"), SLM_KEYFILE_SECRET, "abc", 3),
        SLM_ERR_IO, "refusing to overwrite");
    assert_int_equal(symlink(P("elsewhere"), P("link.secret")), 0);
    assert_int_not_equal(
        slm_keyfile_write_new(P("link.secret"), SLM_KEYFILE_SECRET, "a", 1),
        SLM_OK);
    assert_int_equal(access(P("elsewhere"), F_OK), -1);
    assert_int_equal(
        slm_keyfile_read(P("x.secret"), SLM_KEYFILE_SECRET, buf, 3, &len),
        SLM_OK);
    assert_int_equal(len, 3);
    assert_memory_equal(buf, "abc", 3);
    expect_fail(
        slm_keyfile_read(P("x.secret"), SLM_KEYFILE_SECRET, buf, 2, &len),
        SLM_ERR_RANGE, "at most 2 expected");
    assert_int_equal(buf[0], 0); /* wiped */
}

/* ------------------------------------------------------------------------ */
/* Hostile manifest text                                                      */

#define HEX64 "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
#define HDR   "shardlm-manifest 1\n"

static void parse_fails(const char *text, size_t len, slm_status want,
                        const char *needle)
{
    slm_manifest_t *m = (slm_manifest_t *)&m; /* must come back NULL */
    slm_status rc =
        slm_manifest_parse((const uint8_t *)text, len, "manifest.txt", &m);
    assert_null(m);
    expect_fail(rc, want, needle);
}

static void parse_ok(const char *text)
{
    slm_manifest_t *m = NULL;
    assert_int_equal(slm_manifest_parse((const uint8_t *)text, strlen(text),
                                        "manifest.txt", &m),
                     SLM_OK);
    slm_manifest_destroy(&m);
}

#define FAILS(text, want, needle)                                              \
    parse_fails(text, sizeof(text) - 1, want, needle)

static void test_parse_hostile(void **state)
{
    (void)state;
    parse_ok(HDR "sha256 " HEX64 " 0 a\n");
    parse_ok(HDR "sha256 " HEX64 " 281474976710656 A+._-9\n"); /* 2^48 */
    parse_ok(HDR "sha256 " HEX64 " 1 a\nsha256 " HEX64 " 1 b\n");

    FAILS("", SLM_ERR_FORMAT, "manifest.txt line 1: empty file");
    FAILS(HDR, SLM_ERR_FORMAT, "manifest.txt: lists no files");
    FAILS("shardlm-manifest 2\nsha256 " HEX64 " 0 a\n", SLM_ERR_FORMAT,
          "line 1: expected 'shardlm-manifest 1'");
    FAILS("shardlm-manifest 1 \n", SLM_ERR_FORMAT, "line 1: expected");
    FAILS("shardlm-manifest 1", SLM_ERR_FORMAT,
          "line 1: no newline at the end of the file");
    /* path tricks */
    FAILS(HDR "sha256 " HEX64 " 0 ../x\n", SLM_ERR_FORMAT,
          "line 2: name contains '/'");
    FAILS(HDR "sha256 " HEX64 " 0 a/b\n", SLM_ERR_FORMAT,
          "line 2: name contains '/'");
    FAILS(HDR "sha256 " HEX64 " 0 /etc\n", SLM_ERR_FORMAT, "contains '/'");
    FAILS(HDR "sha256 " HEX64 " 0 ..\n", SLM_ERR_FORMAT, "'.' or '..'");
    FAILS(HDR "sha256 " HEX64 " 0 .\n", SLM_ERR_FORMAT, "'.' or '..'");
    FAILS(HDR "sha256 " HEX64 " 0 -rf\n", SLM_ERR_FORMAT, "starts with '-'");
    FAILS(HDR "sha256 " HEX64 " 0 a b\n", SLM_ERR_FORMAT,
          "byte outside [A-Za-z0-9._+-]");
    FAILS(HDR "sha256 " HEX64 " 0 a\\b\n", SLM_ERR_FORMAT, "byte outside");
    FAILS(HDR "sha256 " HEX64 " 0 a \n", SLM_ERR_FORMAT, "byte outside");
    FAILS(HDR "sha256 " HEX64 " 0 \n", SLM_ERR_FORMAT, "line 2: empty name");
    FAILS(HDR "sha256 " HEX64 " 0\n", SLM_ERR_FORMAT, "line 2: missing name");
    FAILS(HDR "sha256 " HEX64 " 1 b\nsha256 " HEX64 " 1 b\n", SLM_ERR_FORMAT,
          "line 3: duplicate name 'b'");
    FAILS(HDR "sha256 " HEX64 " 1 b\nsha256 " HEX64 " 1 a\n", SLM_ERR_FORMAT,
          "line 3: 'a' is out of order");
    FAILS(HDR "sha256 " HEX64 " 0 a\0b\n", SLM_ERR_FORMAT,
          "line 2: byte 0x00 at column 76");
    FAILS(HDR "sha256 " HEX64 " 0 a\tb\n", SLM_ERR_FORMAT, "byte 0x09");
    FAILS(HDR "sha256 " HEX64 " 0 caf\xc3\xa9\n", SLM_ERR_FORMAT, "byte 0xc3");
    FAILS(HDR "sha256 " HEX64 " 0 a\x7f\n", SLM_ERR_FORMAT, "byte 0x7f");
    /* sizes */
    FAILS(HDR "sha256 " HEX64 " 281474976710657 a\n", SLM_ERR_RANGE,
          "line 2: size 281474976710657 exceeds the limit");
    FAILS(HDR "sha256 " HEX64 " 18446744073709551615 a\n", SLM_ERR_RANGE,
          "exceeds the limit");
    FAILS(HDR "sha256 " HEX64 " 18446744073709551616 a\n", SLM_ERR_RANGE,
          "line 2: size overflows 64 bits");
    FAILS(HDR "sha256 " HEX64 " 999999999999999999999999999999 a\n",
          SLM_ERR_RANGE, "overflows");
    FAILS(HDR "sha256 " HEX64 " 00000000000000000000000000001 a\n",
          SLM_ERR_RANGE, "overflows");
    FAILS(HDR "sha256 " HEX64 " 01 a\n", SLM_ERR_FORMAT, "leading zero");
    FAILS(HDR "sha256 " HEX64 " -1 a\n", SLM_ERR_FORMAT, "non-digit");
    FAILS(HDR "sha256 " HEX64 " +1 a\n", SLM_ERR_FORMAT, "non-digit");
    FAILS(HDR "sha256 " HEX64 " 0x10 a\n", SLM_ERR_FORMAT, "non-digit");
    FAILS(HDR "sha256 " HEX64 "  1 a\n", SLM_ERR_FORMAT, "missing size");
    /* digests */
    FAILS(HDR "sha256 " HEX64 "0 1 a\n", SLM_ERR_FORMAT,
          "line 2: digest must be 64 lowercase hex");
    FAILS(HDR "sha256 0123456789abcdef0123456789abcdef0123456789abcdef012345"
              "6789abcde 1 a\n",
          SLM_ERR_FORMAT, "64 lowercase hex");
    FAILS(HDR "sha256 0123456789ABCDEF0123456789abcdef0123456789abcdef012345"
              "6789abcdef 1 a\n",
          SLM_ERR_FORMAT, "64 lowercase hex");
    FAILS(HDR "sha256 g123456789abcdef0123456789abcdef0123456789abcdef012345"
              "6789abcdef 1 a\n",
          SLM_ERR_FORMAT, "64 lowercase hex");
    FAILS(HDR "sha256 " HEX64, SLM_ERR_FORMAT, "no newline");
    FAILS(HDR "sha256 " HEX64 "\n", SLM_ERR_FORMAT, "64 lowercase hex");
    FAILS(HDR "sha512 " HEX64 " 0 a\n", SLM_ERR_FORMAT,
          "line 2: expected 'sha256 <64 hex> <size> <name>'");
    FAILS(HDR "sha256  " HEX64 " 0 a\n", SLM_ERR_FORMAT, "64 lowercase hex");
    FAILS(HDR "\n", SLM_ERR_FORMAT, "line 2: empty line");
    FAILS(HDR "sha256 " HEX64 " 0 a\n\n", SLM_ERR_FORMAT, "line 3: empty line");
    /* line endings */
    FAILS(HDR "sha256 " HEX64 " 0 a", SLM_ERR_FORMAT,
          "line 2: no newline at the end of the file");
    FAILS("shardlm-manifest 1\r\nsha256 " HEX64 " 0 a\r\n", SLM_ERR_FORMAT,
          "line 1: carriage return at column 19 (CRLF");
    FAILS(HDR "sha256 " HEX64 " 0 a\r\n", SLM_ERR_FORMAT,
          "line 2: carriage return");

    /* Over-long lines and names; too many files; too many bytes. */
    static char big[SLM_MANIFEST_MAX_BYTES + 2048];
    char name[300];
    memset(name, 'n', sizeof name);
    name[256] = '\0';
    int k = snprintf(big, sizeof big, HDR "sha256 " HEX64 " 0 %s\n", name);
    parse_fails(big, (size_t)k, SLM_ERR_FORMAT,
                "line 2: name longer than 255 bytes");
    name[255] = '\0';
    k = snprintf(big, sizeof big, HDR "sha256 " HEX64 " 0 %s\n", name);
    parse_ok(big);
    memset(big, 'x', 600);
    memcpy(big, HDR, sizeof HDR - 1);
    parse_fails(big, 600, SLM_ERR_FORMAT, "line 2: longer than 512 bytes");
    big[599] = '\n';
    parse_fails(big, 600, SLM_ERR_FORMAT, "line 2: longer than 512 bytes");
    memset(big, 'x', SLM_MANIFEST_MAX_BYTES + 1);
    parse_fails(big, SLM_MANIFEST_MAX_BYTES + 1, SLM_ERR_RANGE,
                "exceeds the limit");
    size_t used = (size_t)snprintf(big, sizeof big, HDR);
    for (int i = 0; i < SLM_MANIFEST_MAX_FILES + 1; i++)
        used += (size_t)snprintf(big + used, sizeof big - used,
                                 "sha256 " HEX64 " 1 f%05d\n", i);
    parse_fails(big, used, SLM_ERR_RANGE, "line 1026: more than 1024 files");
    /* Exactly the maximum parses. */
    const size_t one = strlen("sha256 " HEX64 " 1 f00000\n");
    slm_manifest_t *m = NULL;
    assert_int_equal(slm_manifest_parse((const uint8_t *)big, used - one,
                                        "manifest.txt", &m),
                     SLM_OK);
    assert_int_equal(slm_manifest_count(m), SLM_MANIFEST_MAX_FILES);
    assert_non_null(slm_manifest_find(m, "f01023"));
    slm_manifest_destroy(&m);
}

/* For slm_test_hostile_bytes: must not crash; what parses must round-trip. */
static void try_parse(const uint8_t *buf, size_t len)
{
    slm_manifest_t *m = NULL;
    if (slm_manifest_parse(buf, len, "fuzz", &m) != SLM_OK) {
        assert_null(m);
        assert_true(slm_error_message()[0] != '\0');
        return;
    }
    char *text = NULL;
    size_t n = 0;
    assert_int_equal(slm_manifest_format(m, &text, &n), SLM_OK);
    assert_int_equal(n, len);
    assert_memory_equal(text, buf, len);
    free(text);
    slm_manifest_destroy(&m);
}

static void test_parse_mutations(void **state)
{
    (void)state;
    static const char a[] = HDR "sha256 " HEX64 " 0 a\n";
    static const char b[] = HDR "sha256 " HEX64 " 1056540 stories260K.bin\n"
                                "sha256 " HEX64 " 6 tok512.bin\n";
    uint8_t *valid[2] = {(uint8_t *)a, (uint8_t *)b};
    size_t lens[2] = {sizeof a - 1, sizeof b - 1};
    slm_test_hostile_bytes(valid, lens, 2, 2000, 20000, 99, try_parse);
}

/* ------------------------------------------------------------------------ */
/* Paths and coverage                                                         */

static void test_paths_and_coverage(void **state)
{
    (void)state;
    make_model_files();
    char other[600];
    snprintf(other, sizeof other, "%s-other", S.dir);
    assert_int_equal(mkdir(other, 0700), 0);
    char outside[700];
    snprintf(outside, sizeof outside, "%s/stories260K.bin", other);
    write_file(outside, model, sizeof model, 0644);

    /* write: a file outside the manifest's directory, even with the same
     * name and content; a file listed twice; names the format refuses. */
    const char *f1[1] = {outside};
    expect_fail(slm_manifest_write(P("manifest.txt"), f1, 1, NULL, NULL),
                SLM_ERR_INVALID, "not the file");
    const char *f2[2] = {P("stories260K.bin"), P("stories260K.bin")};
    expect_fail(slm_manifest_write(P("manifest.txt"), f2, 2, NULL, NULL),
                SLM_ERR_INVALID, "stories260K.bin: given more than once");
    write_str(P("has space"), "x");
    const char *f3[1] = {P("has space")};
    expect_fail(slm_manifest_write(P("manifest.txt"), f3, 1, NULL, NULL),
                SLM_ERR_INVALID, "byte outside");
    const char *f4[1] = {P("nope.bin")};
    expect_fail(slm_manifest_write(P("manifest.txt"), f4, 1, NULL, NULL),
                SLM_ERR_IO, "nope.bin: cannot stat");
    expect_fail(slm_manifest_write(P("manifest.txt"), f4, 0, NULL, NULL),
                SLM_ERR_INVALID, "0 files given");
    const char *f5[1] = {P("manifest.txt")};
    expect_fail(slm_manifest_write(P("manifest.txt"), f5, 1, NULL, NULL),
                SLM_ERR_INVALID, "cannot list itself");
    assert_int_equal(access(P("manifest.txt"), F_OK), -1);

    const char *f6[1] = {P("stories260K.bin")};
    assert_int_equal(slm_manifest_write(P("manifest.txt"), f6, 1, NULL, NULL),
                     SLM_OK);
    /* must_cover: the tokenizer is not listed; a same-named file elsewhere
     * is not the listed one (it would otherwise ride on the manifest). */
    const char *m1[2] = {P("stories260K.bin"), P("tok512.bin")};
    expect_fail(slm_manifest_verify(P("manifest.txt"), NULL, m1, 2, NULL),
                SLM_ERR_INVALID, "tok512.bin: not listed in");
    const char *m2[1] = {outside};
    expect_fail(slm_manifest_verify(P("manifest.txt"), NULL, m2, 1, NULL),
                SLM_ERR_INVALID, "-other/stories260K.bin: not the file");
    /* Coverage goes by base name: a link under another name is not listed. */
    assert_int_equal(symlink("stories260K.bin", P("link.bin")), 0);
    const char *m3[1] = {P("link.bin")};
    expect_fail(slm_manifest_verify(P("manifest.txt"), NULL, m3, 1, NULL),
                SLM_ERR_INVALID, "link.bin: not listed");
    unlink(outside);
    rmdir(other);
    /* A manifest that is not there, or too large. */
    expect_fail(slm_manifest_verify(P("none.txt"), NULL, NULL, 0, NULL),
                SLM_ERR_IO, "none.txt: cannot open");
}

/* ------------------------------------------------------------------------ */
/* Command line                                                               */

static int run(int argc, const char **argv)
{
    if (strcmp(argv[0], "keygen") == 0)
        return slm_keygen_sign_main(argc, (char **)argv);
    return slm_manifest_main(argc, (char **)argv);
}

#define RUN(...)                                                               \
    run((int)(sizeof((const char *[]){__VA_ARGS__}) / sizeof(const char *)),   \
        (const char *[]){__VA_ARGS__})

static void test_cli(void **state)
{
    (void)state;
    make_model_files();
    assert_int_equal(RUN("keygen", "--sign", P("k")), 0);
    assert_int_equal(RUN("keygen", "--sign", P("k")), 1); /* exists */
    assert_int_equal(RUN("keygen"), 2);
    assert_int_equal(RUN("keygen", "--sign", P("j"), "extra"), 2);
    assert_int_equal(RUN("keygen", "--sign"), 2);
    assert_int_equal(RUN("manifest", "--out", P("manifest.txt"), "--sign",
                         P("k.secret"), P("stories260K.bin"), P("tok512.bin")),
                     0);
    assert_int_equal(RUN("manifest", "--verify", P("manifest.txt"),
                         "--public-key", P("k.public"), P("stories260K.bin"),
                         P("tok512.bin")),
                     0);
    assert_int_equal(RUN("manifest", "--verify", P("manifest.txt")), 0);
    flip(P("stories260K.bin"), 1000, 0x10);
    assert_int_equal(RUN("manifest", "--verify", P("manifest.txt"),
                         "--public-key", P("k.public")),
                     1);
    flip(P("stories260K.bin"), 1000, 0x10);
    /* usage errors */
    assert_int_equal(RUN("manifest"), 2);
    assert_int_equal(RUN("manifest", "--out", P("m2")), 2);
    assert_int_equal(
        RUN("manifest", "--out", P("m2"), "--verify", P("manifest.txt")), 2);
    assert_int_equal(RUN("manifest", "--out", P("m2"), "--public-key",
                         P("k.public"), P("tok512.bin")),
                     2);
    assert_int_equal(
        RUN("manifest", "--verify", P("manifest.txt"), "--sign", P("k.secret")),
        2);
    assert_int_equal(RUN("manifest", "--bogus"), 2);
    assert_int_equal(RUN("manifest", "--help"), 0);
    assert_int_equal(access(P("m2"), F_OK), -1);
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    umask(022);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_every_flip_is_caught, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_truncated_extended_missing, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_signed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_key_files, setup, teardown),
        cmocka_unit_test(test_parse_hostile),
        cmocka_unit_test(test_parse_mutations),
        cmocka_unit_test_setup_teardown(test_paths_and_coverage, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_cli, setup, teardown),
    };
    return cmocka_run_group_tests_name("manifest", tests, NULL, NULL);
}
