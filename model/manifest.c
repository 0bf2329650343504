/* model/manifest.c - SHA-256 manifests and Ed25519 signatures; see
 * manifest.h for the formats. */
#include "model/manifest.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/checked.h"
#include "common/clock.h"
#include "common/file.h"
#include "common/keyfile.h"

#define SIG_TAG     "shardlm-ed25519-signature "
#define PUBLIC_TAG  "shardlm-ed25519-public-key "
#define SECRET_TAG  "shardlm-ed25519-secret-key "
#define HASH_TAG    "sha256 "
#define HASH_BUFFER (1u << 20) /* streaming read size */
#define SIZE_DIGITS 20         /* UINT64_MAX has 20 */

struct slm_manifest {
    size_t n;
    slm_manifest_entry *entries; /* (n), strictly increasing names */
};

/* ------------------------------------------------------------------------ */
/* Parsing                                                                    */

static int hex_value(uint8_t c)
{
    /* Lowercase only: one spelling per digest keeps the form canonical. */
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* Decodes exactly 2 * n lowercase hex digits; false on any other byte. */
static bool hex_decode(const uint8_t *hex, size_t n, uint8_t *out)
{
    for (size_t i = 0; i < n; i++) {
        int hi = hex_value(hex[2 * i]), lo = hex_value(hex[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return false;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return true;
}

static void hex_encode(const uint8_t *in, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * n] = '\0';
}

const char *slm_manifest_name_problem(const char *name, size_t len)
{
    if (len == 0)
        return "empty name";
    if (len > SLM_MANIFEST_MAX_NAME)
        return "name longer than 255 bytes";
    if ((len == 1 && name[0] == '.') ||
        (len == 2 && name[0] == '.' && name[1] == '.'))
        return "name is '.' or '..'";
    if (name[0] == '-')
        return "name starts with '-'";
    for (size_t i = 0; i < len; i++) {
        const unsigned char c = (unsigned char)name[i];
        if (c == '/')
            return "name contains '/' (names are plain file names in the "
                   "manifest's directory)";
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-' ||
              c == '+'))
            return "name has a byte outside [A-Za-z0-9._+-]";
    }
    return NULL;
}

/* Parses one "sha256 <hex> <size> <name>" line s(n) (no LF) into e. */
static slm_status parse_entry(const uint8_t *s, size_t n, const char *what,
                              size_t line, slm_manifest_entry *e)
{
    const size_t tag = sizeof HASH_TAG - 1;
    if (n == 0)
        return slm_fail(SLM_ERR_FORMAT, "%s line %zu: empty line", what, line);
    if (n < tag || memcmp(s, HASH_TAG, tag) != 0)
        return slm_fail(SLM_ERR_FORMAT,
                        "%s line %zu: expected 'sha256 <64 hex> <size> "
                        "<name>'",
                        what, line);
    size_t off = tag;
    if (n - off < 64 + 1 || !hex_decode(s + off, 32, e->sha256) ||
        s[off + 64] != ' ')
        return slm_fail(SLM_ERR_FORMAT,
                        "%s line %zu: digest must be 64 lowercase hex digits "
                        "followed by a space",
                        what, line);
    off += 64 + 1;
    size_t digits = 0;
    uint64_t size = 0;
    while (off + digits < n && s[off + digits] != ' ') {
        const uint8_t c = s[off + digits];
        if (c < '0' || c > '9')
            return slm_fail(SLM_ERR_FORMAT,
                            "%s line %zu: size has a non-digit at column %zu",
                            what, line, off + digits + 1);
        if (digits == SIZE_DIGITS || !slm_u64_mul(size, 10, &size) ||
            !slm_u64_add(size, (uint64_t)(c - '0'), &size))
            return slm_fail(SLM_ERR_RANGE,
                            "%s line %zu: size overflows 64 bits", what, line);
        digits++;
    }
    if (digits == 0)
        return slm_fail(SLM_ERR_FORMAT, "%s line %zu: missing size", what,
                        line);
    if (digits > 1 && s[off] == '0')
        return slm_fail(SLM_ERR_FORMAT, "%s line %zu: size has a leading zero",
                        what, line);
    if (size > SLM_MANIFEST_MAX_FILE_SIZE)
        return slm_fail(SLM_ERR_RANGE,
                        "%s line %zu: size %llu exceeds the limit of %llu",
                        what, line, (unsigned long long)size,
                        (unsigned long long)SLM_MANIFEST_MAX_FILE_SIZE);
    off += digits;
    if (off == n)
        return slm_fail(SLM_ERR_FORMAT, "%s line %zu: missing name", what,
                        line);
    off++; /* the space that ended the size */
    const char *name = (const char *)s + off;
    const size_t name_len = n - off;
    const char *why = slm_manifest_name_problem(name, name_len);
    if (why)
        return slm_fail(SLM_ERR_FORMAT, "%s line %zu: %s", what, line, why);
    memcpy(e->name, name, name_len);
    e->name[name_len] = '\0';
    e->size = size;
    return SLM_OK;
}

slm_status slm_manifest_parse(const uint8_t *data, size_t len, const char *what,
                              slm_manifest_t **out)
{
    *out = NULL;
    if (!what)
        what = "manifest";
    if (len > SLM_MANIFEST_MAX_BYTES)
        return slm_fail(SLM_ERR_RANGE, "%s: %zu bytes exceeds the limit of %d",
                        what, len, SLM_MANIFEST_MAX_BYTES);
    if (len == 0)
        return slm_fail(SLM_ERR_FORMAT, "%s line 1: empty file, expected '%s'",
                        what, SLM_MANIFEST_MAGIC);
    /* Entries are lines after the first: allocate for as many as there are
     * LFs, capped at the limit (more is an error when reached). */
    size_t lfs = 0;
    for (size_t i = 0; i < len; i++)
        lfs += data[i] == '\n';
    size_t cap = lfs > SLM_MANIFEST_MAX_FILES ? SLM_MANIFEST_MAX_FILES : lfs;
    slm_manifest_t *m = calloc(1, sizeof *m);
    if (!m)
        return slm_fail(SLM_ERR_NOMEM, "%s: out of memory", what);
    m->entries = calloc(cap ? cap : 1, sizeof *m->entries);
    if (!m->entries) {
        free(m);
        return slm_fail(SLM_ERR_NOMEM, "%s: cannot allocate %zu entries", what,
                        cap);
    }
    slm_status rc = SLM_OK;
    size_t off = 0, line = 0;
    while (off < len) {
        line++;
        const size_t rem = len - off;
        const size_t scan =
            rem < SLM_MANIFEST_MAX_LINE ? rem : SLM_MANIFEST_MAX_LINE;
        const uint8_t *s = data + off;
        const uint8_t *lf = memchr(s, '\n', scan);
        if (!lf) {
            if (rem > SLM_MANIFEST_MAX_LINE)
                rc = slm_fail(SLM_ERR_FORMAT,
                              "%s line %zu: longer than %d bytes", what, line,
                              SLM_MANIFEST_MAX_LINE);
            else
                rc = slm_fail(SLM_ERR_FORMAT,
                              "%s line %zu: no newline at the end of the "
                              "file",
                              what, line);
            goto fail;
        }
        const size_t n = (size_t)(lf - s);
        for (size_t i = 0; i < n; i++) {
            if (s[i] == '\r') {
                rc = slm_fail(SLM_ERR_FORMAT,
                              "%s line %zu: carriage return at column %zu "
                              "(CRLF line endings are not accepted)",
                              what, line, i + 1);
                goto fail;
            }
            if (s[i] < 0x20 || s[i] > 0x7e) {
                rc = slm_fail(SLM_ERR_FORMAT,
                              "%s line %zu: byte 0x%02x at column %zu is not "
                              "printable ASCII",
                              what, line, s[i], i + 1);
                goto fail;
            }
        }
        if (line == 1) {
            const size_t magic = sizeof SLM_MANIFEST_MAGIC - 1;
            if (n != magic || memcmp(s, SLM_MANIFEST_MAGIC, magic) != 0) {
                rc = slm_fail(SLM_ERR_FORMAT,
                              "%s line 1: expected '%s' (not a shardlm "
                              "manifest, or an unsupported version)",
                              what, SLM_MANIFEST_MAGIC);
                goto fail;
            }
        } else {
            if (m->n == SLM_MANIFEST_MAX_FILES) {
                rc = slm_fail(SLM_ERR_RANGE, "%s line %zu: more than %d files",
                              what, line, SLM_MANIFEST_MAX_FILES);
                goto fail;
            }
            slm_manifest_entry *e = &m->entries[m->n];
            SLM_CHECK_GOTO(parse_entry(s, n, what, line, e), rc, fail);
            if (m->n > 0) {
                const int c = strcmp(m->entries[m->n - 1].name, e->name);
                if (c == 0) {
                    rc = slm_fail(SLM_ERR_FORMAT,
                                  "%s line %zu: duplicate name '%s'", what,
                                  line, e->name);
                    goto fail;
                }
                if (c > 0) {
                    rc = slm_fail(SLM_ERR_FORMAT,
                                  "%s line %zu: '%s' is out of order (names "
                                  "must be sorted)",
                                  what, line, e->name);
                    goto fail;
                }
            }
            m->n++;
        }
        off += n + 1;
    }
    if (m->n == 0) {
        rc = slm_fail(SLM_ERR_FORMAT, "%s: lists no files", what);
        goto fail;
    }
    *out = m;
    return SLM_OK;
fail:
    slm_manifest_destroy(&m);
    return rc;
}

void slm_manifest_destroy(slm_manifest_t **m)
{
    if (!m || !*m)
        return;
    free((*m)->entries);
    free(*m);
    *m = NULL;
}

size_t slm_manifest_count(const slm_manifest_t *m)
{
    return m->n;
}

const slm_manifest_entry *slm_manifest_entry_at(const slm_manifest_t *m,
                                                size_t i)
{
    return i < m->n ? &m->entries[i] : NULL;
}

const slm_manifest_entry *slm_manifest_find(const slm_manifest_t *m,
                                            const char *name)
{
    size_t lo = 0, hi = m->n;
    while (lo < hi) {
        const size_t mid = lo + (hi - lo) / 2;
        const int c = strcmp(m->entries[mid].name, name);
        if (c == 0)
            return &m->entries[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

slm_status slm_manifest_format(const slm_manifest_t *m, char **out, size_t *len)
{
    *out = NULL;
    *len = 0;
    size_t cap;
    if (!slm_size_mul(m->n, SLM_MANIFEST_MAX_LINE, &cap) ||
        !slm_size_add(cap, SLM_MANIFEST_MAX_LINE, &cap))
        return slm_fail(SLM_ERR_RANGE, "manifest of %zu files too large", m->n);
    char *buf = malloc(cap);
    if (!buf)
        return slm_fail(SLM_ERR_NOMEM, "cannot allocate %zu bytes", cap);
    size_t used = 0;
    int k = snprintf(buf, cap, "%s\n", SLM_MANIFEST_MAGIC);
    used += (size_t)k;
    for (size_t i = 0; i < m->n; i++) {
        const slm_manifest_entry *e = &m->entries[i];
        char hex[65];
        hex_encode(e->sha256, 32, hex);
        /* Each line fits MAX_LINE by construction (7 + 64 + 1 + 20 + 1 + 255
         * + 1 = 349); snprintf's bound is the backstop. */
        k = snprintf(buf + used, cap - used, "%s%s %llu %s\n", HASH_TAG, hex,
                     (unsigned long long)e->size, e->name);
        if (k < 0 || (size_t)k >= cap - used) {
            free(buf);
            return slm_fail(SLM_ERR_INTERNAL, "manifest line %zu overflowed",
                            i + 2);
        }
        used += (size_t)k;
    }
    *out = buf;
    *len = used;
    return SLM_OK;
}

/* ------------------------------------------------------------------------ */
/* Files                                                                      */

static slm_status sodium_ready(void)
{
    /* Idempotent and thread-safe in libsodium >= 1.0.11; 1 = already done. */
    if (sodium_init() < 0)
        return slm_fail(SLM_ERR_INTERNAL, "libsodium failed to initialise");
    return SLM_OK;
}

/* The directory part of path ("." when it has none), in dir(cap). */
static slm_status dir_of(const char *path, char *dir, size_t cap)
{
    const char *slash = strrchr(path, '/');
    size_t n = slash ? (size_t)(slash - path) : 1;
    const char *src = slash ? path : ".";
    if (slash && n == 0)
        n = 1; /* "/x": the root */
    if (n >= cap)
        return slm_fail(SLM_ERR_RANGE, "%s: path too long", path);
    memcpy(dir, src, n);
    dir[n] = '\0';
    return SLM_OK;
}

static const char *base_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

static slm_status open_dir(const char *dir, int *fd)
{
    *fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (*fd < 0)
        return slm_fail(SLM_ERR_IO, "%s: cannot open directory: %s", dir,
                        strerror(errno));
    return SLM_OK;
}

/* Is `path` the same file as `name` in dirfd? Fails naming path if not. */
static slm_status same_file(const char *path, int dirfd, const char *dir,
                            const char *name, const char *why)
{
    struct stat a, b;
    if (stat(path, &a) != 0)
        return slm_fail(SLM_ERR_IO, "%s: cannot stat: %s", path,
                        strerror(errno));
    if (fstatat(dirfd, name, &b, 0) != 0 || a.st_dev != b.st_dev ||
        a.st_ino != b.st_ino)
        return slm_fail(SLM_ERR_INVALID,
                        "%s: not the file %s/%s %s (manifest names are "
                        "relative to the manifest's directory)",
                        path, dir, name, why);
    return SLM_OK;
}

/* Hashes `name` in dirfd into digest, streaming through buf(HASH_BUFFER).
 * With expect_size (not UINT64_MAX), a different size fails before any
 * byte is read. *size gets the bytes hashed. `manifest` names the manifest
 * in messages. */
static slm_status hash_file(int dirfd, const char *name, const char *manifest,
                            uint64_t expect_size, uint8_t *buf,
                            uint8_t digest[32], uint64_t *size)
{
    slm_status rc = SLM_OK;
    int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0)
        return slm_fail(SLM_ERR_IO, "%s: cannot open: %s", name,
                        strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        rc = slm_fail(SLM_ERR_IO, "%s: cannot stat: %s", name, strerror(errno));
        goto done;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = slm_fail(SLM_ERR_INVALID, "%s: not a regular file", name);
        goto done;
    }
    const uint64_t st_size = (uint64_t)st.st_size;
    if (st.st_size < 0 || st_size > SLM_MANIFEST_MAX_FILE_SIZE) {
        rc = slm_fail(SLM_ERR_RANGE, "%s: size %lld exceeds the limit of %llu",
                      name, (long long)st.st_size,
                      (unsigned long long)SLM_MANIFEST_MAX_FILE_SIZE);
        goto done;
    }
    if (expect_size != UINT64_MAX && st_size != expect_size) {
        rc = slm_fail(SLM_ERR_FORMAT,
                      "%s: size %llu bytes differs from %s's %llu (file "
                      "truncated, extended or replaced)",
                      name, (unsigned long long)st_size, manifest,
                      (unsigned long long)expect_size);
        goto done;
    }
    crypto_hash_sha256_state h;
    crypto_hash_sha256_init(&h);
    uint64_t total = 0;
    for (;;) {
        ssize_t n = read(fd, buf, HASH_BUFFER);
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (n < 0) {
            rc = slm_fail(SLM_ERR_IO, "%s: read failed at byte %llu: %s", name,
                          (unsigned long long)total, strerror(errno));
            goto done;
        }
        if (n == 0)
            break;
        if (!slm_u64_add(total, (uint64_t)n, &total) || total > st_size) {
            rc = slm_fail(SLM_ERR_IO, "%s: grew while it was hashed", name);
            goto done;
        }
        crypto_hash_sha256_update(&h, buf, (unsigned long long)n);
    }
    if (total != st_size) {
        rc = slm_fail(
            SLM_ERR_IO, "%s: shrank while it was hashed (%llu of %llu bytes)",
            name, (unsigned long long)total, (unsigned long long)st_size);
        goto done;
    }
    crypto_hash_sha256_final(&h, digest);
    *size = total;
done:
    close(fd);
    return rc;
}

/* Reads a one-line "<tag><hex>\n" file of exactly `bytes` decoded bytes. */
static slm_status parse_tagged_hex(const uint8_t *data, size_t len,
                                   const char *path, const char *tag,
                                   uint8_t *out, size_t bytes)
{
    const size_t t = strlen(tag);
    if (len != t + 2 * bytes + 1 || memcmp(data, tag, t) != 0 ||
        data[len - 1] != '\n' || !hex_decode(data + t, bytes, out))
        return slm_fail(SLM_ERR_FORMAT,
                        "%s: expected one line '%s<%zu lowercase hex "
                        "digits>'",
                        path, tag, 2 * bytes);
    return SLM_OK;
}

static slm_status read_public_key(const char *path,
                                  uint8_t pk[crypto_sign_PUBLICKEYBYTES])
{
    uint8_t buf[128];
    size_t len = 0;
    SLM_CHECK(
        slm_keyfile_read(path, SLM_KEYFILE_PUBLIC, buf, sizeof buf, &len));
    return parse_tagged_hex(buf, len, path, PUBLIC_TAG, pk,
                            crypto_sign_PUBLICKEYBYTES);
}

/* Reads PREFIX.secret's seed and derives the key pair; the caller wipes sk. */
static slm_status read_secret_key(const char *path,
                                  uint8_t pk[crypto_sign_PUBLICKEYBYTES],
                                  uint8_t sk[crypto_sign_SECRETKEYBYTES])
{
    uint8_t buf[128];
    uint8_t seed[crypto_sign_SEEDBYTES];
    size_t len = 0;
    SLM_CHECK(
        slm_keyfile_read(path, SLM_KEYFILE_SECRET, buf, sizeof buf, &len));
    slm_status rc =
        parse_tagged_hex(buf, len, path, SECRET_TAG, seed, sizeof seed);
    if (rc == SLM_OK && crypto_sign_seed_keypair(pk, sk, seed) != 0)
        rc = slm_fail(SLM_ERR_INTERNAL, "%s: cannot derive the key pair", path);
    sodium_memzero(buf, sizeof buf);
    sodium_memzero(seed, sizeof seed);
    return rc;
}

/* Creates path exclusively and writes data(len); removes it on failure. */
static slm_status write_new_file(const char *path, const void *data, size_t len)
{
    /* Same rules as a public key file: exclusive, 0644, fsynced. */
    return slm_keyfile_write_new(path, SLM_KEYFILE_PUBLIC, data, len);
}

static slm_status sig_path_of(const char *manifest_path, char *out, size_t cap)
{
    int k = snprintf(out, cap, "%s%s", manifest_path, SLM_MANIFEST_SIG_SUFFIX);
    if (k < 0 || (size_t)k >= cap)
        return slm_fail(SLM_ERR_RANGE, "%s: path too long", manifest_path);
    return SLM_OK;
}

static int entry_cmp(const void *a, const void *b)
{
    return strcmp(((const slm_manifest_entry *)a)->name,
                  ((const slm_manifest_entry *)b)->name);
}

slm_status slm_manifest_write(const char *out_path, const char *const *files,
                              size_t n, const char *secret_key_path,
                              slm_manifest_report *report)
{
    const double t0 = slm_now_seconds();
    slm_manifest_report rep = {0};
    if (n == 0 || n > SLM_MANIFEST_MAX_FILES)
        return slm_fail(SLM_ERR_INVALID,
                        "%s: %zu files given; a manifest lists 1 to %d",
                        out_path, n, SLM_MANIFEST_MAX_FILES);
    SLM_CHECK(sodium_ready());
    char dir[PATH_MAX], sig_path[PATH_MAX];
    SLM_CHECK(dir_of(out_path, dir, sizeof dir));
    SLM_CHECK(sig_path_of(out_path, sig_path, sizeof sig_path));
    const char *out_name = base_of(out_path);

    slm_status rc = SLM_OK;
    int dirfd = -1;
    uint8_t *buf = NULL;
    char *text = NULL;
    size_t text_len = 0;
    bool wrote_manifest = false;
    uint8_t pk[crypto_sign_PUBLICKEYBYTES];
    uint8_t sk[crypto_sign_SECRETKEYBYTES];
    slm_manifest_t m = {0, NULL};
    /* The key first: a bad key file should not cost a pass over the model. */
    if (secret_key_path)
        SLM_CHECK_GOTO(read_secret_key(secret_key_path, pk, sk), rc, done);
    SLM_CHECK_GOTO(open_dir(dir, &dirfd), rc, done);
    m.entries = calloc(n, sizeof *m.entries);
    buf = malloc(HASH_BUFFER);
    if (!m.entries || !buf) {
        rc = slm_fail(SLM_ERR_NOMEM, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        const char *name = base_of(files[i]);
        const char *why = slm_manifest_name_problem(name, strlen(name));
        if (why) {
            rc = slm_fail(SLM_ERR_INVALID, "%s: %s", files[i], why);
            goto done;
        }
        if (strcmp(name, out_name) == 0) {
            rc = slm_fail(SLM_ERR_INVALID, "%s: a manifest cannot list itself",
                          files[i]);
            goto done;
        }
        SLM_CHECK_GOTO(same_file(files[i], dirfd, dir, name,
                                 "beside the "
                                 "manifest"),
                       rc, done);
        slm_manifest_entry *e = &m.entries[i];
        memcpy(e->name, name, strlen(name) + 1);
        SLM_CHECK_GOTO(hash_file(dirfd, name, out_path, UINT64_MAX, buf,
                                 e->sha256, &e->size),
                       rc, done);
        if (!slm_u64_add(rep.bytes, e->size, &rep.bytes)) {
            rc = slm_fail(SLM_ERR_RANGE, "total size overflows");
            goto done;
        }
        rep.files++;
    }
    m.n = n;
    qsort(m.entries, n, sizeof *m.entries, entry_cmp);
    for (size_t i = 1; i < n; i++) {
        if (strcmp(m.entries[i - 1].name, m.entries[i].name) == 0) {
            rc = slm_fail(SLM_ERR_INVALID, "%s: given more than once",
                          m.entries[i].name);
            goto done;
        }
    }
    SLM_CHECK_GOTO(slm_manifest_format(&m, &text, &text_len), rc, done);
    { /* Our own output must satisfy our own parser. */
        slm_manifest_t *check = NULL;
        rc = slm_manifest_parse((const uint8_t *)text, text_len, out_path,
                                &check);
        slm_manifest_destroy(&check);
        if (rc != SLM_OK)
            goto done;
    }
    SLM_CHECK_GOTO(write_new_file(out_path, text, text_len), rc, done);
    wrote_manifest = true;
    if (secret_key_path) {
        uint8_t sig[crypto_sign_BYTES];
        crypto_sign_detached(sig, NULL, (const uint8_t *)text, text_len, sk);
        if (crypto_sign_verify_detached(sig, (const uint8_t *)text, text_len,
                                        pk) != 0) {
            rc = slm_fail(SLM_ERR_INTERNAL,
                          "%s: fresh signature does not "
                          "verify",
                          sig_path);
            goto done;
        }
        char line[sizeof SIG_TAG + 2 * crypto_sign_BYTES + 2];
        char hex[2 * crypto_sign_BYTES + 1];
        hex_encode(sig, sizeof sig, hex);
        int k = snprintf(line, sizeof line, "%s%s\n", SIG_TAG, hex);
        SLM_CHECK_GOTO(write_new_file(sig_path, line, (size_t)k), rc, done);
        rep.signed_out = true;
    }
    rep.seconds = slm_now_seconds() - t0;
    if (report)
        *report = rep;
done:
    if (rc != SLM_OK && wrote_manifest)
        unlink(out_path);
    sodium_memzero(sk, sizeof sk);
    if (dirfd >= 0)
        close(dirfd);
    free(text);
    free(buf);
    free(m.entries);
    return rc;
}

/* Step 1 of verify: the signature over data(len), before it is parsed. */
static slm_status check_signature(const char *manifest_path,
                                  const char *public_key_path,
                                  const uint8_t *data, size_t len)
{
    char sig_path[PATH_MAX];
    SLM_CHECK(sig_path_of(manifest_path, sig_path, sizeof sig_path));
    uint8_t pk[crypto_sign_PUBLICKEYBYTES];
    SLM_CHECK(read_public_key(public_key_path, pk));
    struct stat st;
    if (stat(sig_path, &st) != 0 && errno == ENOENT)
        return slm_fail(SLM_ERR_INVALID,
                        "%s is not signed (no %s), but a public key was "
                        "given: a signature is required",
                        manifest_path, sig_path);
    uint8_t *text = NULL;
    size_t text_len = 0;
    SLM_CHECK(slm_file_read_all(sig_path, 256, &text, &text_len));
    uint8_t sig[crypto_sign_BYTES];
    slm_status rc =
        parse_tagged_hex(text, text_len, sig_path, SIG_TAG, sig, sizeof sig);
    free(text);
    SLM_CHECK(rc);
    if (crypto_sign_verify_detached(sig, data, len, pk) != 0)
        return slm_fail(SLM_ERR_INVALID,
                        "%s: Ed25519 signature does not verify with %s (the "
                        "manifest was changed after signing, or signed with "
                        "another key)",
                        sig_path, public_key_path);
    return SLM_OK;
}

slm_status slm_manifest_verify(const char *manifest_path,
                               const char *public_key_path,
                               const char *const *must_cover, size_t n_must,
                               slm_manifest_report *report)
{
    const double t0 = slm_now_seconds();
    slm_manifest_report rep = {0};
    SLM_CHECK(sodium_ready());
    char dir[PATH_MAX];
    SLM_CHECK(dir_of(manifest_path, dir, sizeof dir));
    slm_status rc = SLM_OK;
    uint8_t *data = NULL, *buf = NULL;
    size_t len = 0;
    slm_manifest_t *m = NULL;
    int dirfd = -1;
    /* One read: the bytes whose signature is checked are the bytes parsed. */
    SLM_CHECK_GOTO(
        slm_file_read_all(manifest_path, SLM_MANIFEST_MAX_BYTES, &data, &len),
        rc, done);
    if (public_key_path) {
        SLM_CHECK_GOTO(
            check_signature(manifest_path, public_key_path, data, len), rc,
            done);
        rep.signature_verified = true;
    }
    SLM_CHECK_GOTO(slm_manifest_parse(data, len, manifest_path, &m), rc, done);
    SLM_CHECK_GOTO(open_dir(dir, &dirfd), rc, done);
    for (size_t i = 0; i < n_must; i++) {
        const char *name = base_of(must_cover[i]);
        if (!slm_manifest_find(m, name)) {
            rc = slm_fail(SLM_ERR_INVALID,
                          "%s: not listed in %s, which covers only the files "
                          "it names",
                          must_cover[i], manifest_path);
            goto done;
        }
        SLM_CHECK_GOTO(same_file(must_cover[i], dirfd, dir, name,
                                 "that the manifest lists"),
                       rc, done);
    }
    buf = malloc(HASH_BUFFER);
    if (!buf) {
        rc = slm_fail(SLM_ERR_NOMEM, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < m->n; i++) {
        const slm_manifest_entry *e = &m->entries[i];
        uint8_t digest[32];
        uint64_t size = 0;
        SLM_CHECK_GOTO(hash_file(dirfd, e->name, manifest_path, e->size, buf,
                                 digest, &size),
                       rc, done);
        if (sodium_memcmp(digest, e->sha256, sizeof digest) != 0) {
            rc = slm_fail(SLM_ERR_FORMAT,
                          "%s: SHA-256 differs from %s (file changed or "
                          "corrupted)",
                          e->name, manifest_path);
            goto done;
        }
        rep.files++;
        rep.bytes += size; /* each <= 2^48, at most 1024 of them */
    }
    rep.seconds = slm_now_seconds() - t0;
    if (report)
        *report = rep;
done:
    if (dirfd >= 0)
        close(dirfd);
    slm_manifest_destroy(&m);
    free(buf);
    free(data);
    return rc;
}

slm_status slm_manifest_keygen(const char *prefix)
{
    SLM_CHECK(sodium_ready());
    char secret_path[PATH_MAX], public_path[PATH_MAX];
    int a = snprintf(secret_path, sizeof secret_path, "%s.secret", prefix);
    int b = snprintf(public_path, sizeof public_path, "%s.public", prefix);
    if (a < 0 || b < 0 || (size_t)a >= sizeof secret_path ||
        (size_t)b >= sizeof public_path)
        return slm_fail(SLM_ERR_RANGE, "%s: path too long", prefix);
    /* Refuse before creating anything if the public half already exists. */
    struct stat st;
    if (lstat(public_path, &st) == 0)
        return slm_fail(SLM_ERR_IO,
                        "%s: already exists; refusing to overwrite a key "
                        "file (remove it first)",
                        public_path);
    uint8_t seed[crypto_sign_SEEDBYTES];
    uint8_t pk[crypto_sign_PUBLICKEYBYTES], sk[crypto_sign_SECRETKEYBYTES];
    char line[sizeof SECRET_TAG + 2 * crypto_sign_SEEDBYTES + 2];
    char hex[2 * crypto_sign_SEEDBYTES + 1];
    randombytes_buf(seed, sizeof seed);
    slm_status rc = SLM_OK;
    if (crypto_sign_seed_keypair(pk, sk, seed) != 0) {
        rc = slm_fail(SLM_ERR_INTERNAL, "cannot derive an Ed25519 key pair");
        goto done;
    }
    hex_encode(seed, sizeof seed, hex);
    int k = snprintf(line, sizeof line, "%s%s\n", SECRET_TAG, hex);
    SLM_CHECK_GOTO(
        slm_keyfile_write_new(secret_path, SLM_KEYFILE_SECRET, line, (size_t)k),
        rc, done);
    hex_encode(pk, sizeof pk, hex);
    k = snprintf(line, sizeof line, "%s%s\n", PUBLIC_TAG, hex);
    rc =
        slm_keyfile_write_new(public_path, SLM_KEYFILE_PUBLIC, line, (size_t)k);
    if (rc != SLM_OK)
        unlink(secret_path);
done:
    sodium_memzero(seed, sizeof seed);
    sodium_memzero(sk, sizeof sk);
    sodium_memzero(line, sizeof line);
    sodium_memzero(hex, sizeof hex);
    return rc;
}
