/* common/zkeys.c - see zkeys.h. */
#include "common/zkeys.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

/* ZeroMQ RFC 32: value -> character. */
static const char z85_chars[] = "0123456789"
                                "abcdefghijklmnopqrstuvwxyz"
                                "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                ".-:+=^!/*?&<>()[]{}@%$#";

/* The value of Z85 character c, or -1. */
static int z85_value(unsigned char c)
{
    const char *p = c ? memchr(z85_chars, c, sizeof z85_chars - 1) : NULL;
    return p ? (int)(p - z85_chars) : -1;
}

void slm_zkeys_wipe(void *p, size_t n)
{
    volatile unsigned char *v = p;
    while (n--)
        *v++ = 0;
}

slm_status slm_zkeys_decode(const char *text, const char *what,
                            uint8_t key[SLM_ZKEY_BYTES])
{
    for (size_t g = 0; g < SLM_ZKEY_Z85_LEN / 5; g++) {
        uint64_t v = 0;
        for (size_t i = 0; i < 5; i++) {
            const size_t at = g * 5 + i;
            const int d = z85_value((unsigned char)text[at]);
            if (d < 0) {
                slm_zkeys_wipe(key, SLM_ZKEY_BYTES);
                return slm_fail(SLM_ERR_FORMAT,
                                "%s: character %zu of the key is not Z85 "
                                "(byte 0x%02x)",
                                what, at + 1, (unsigned char)text[at]);
            }
            v = v * 85 + (uint64_t)d;
        }
        if (v > UINT32_MAX) {
            slm_zkeys_wipe(key, SLM_ZKEY_BYTES);
            return slm_fail(SLM_ERR_FORMAT,
                            "%s: characters %zu-%zu of the key do not encode "
                            "4 bytes (Z85 overflow)",
                            what, g * 5 + 1, g * 5 + 5);
        }
        key[g * 4 + 0] = (uint8_t)(v >> 24);
        key[g * 4 + 1] = (uint8_t)(v >> 16);
        key[g * 4 + 2] = (uint8_t)(v >> 8);
        key[g * 4 + 3] = (uint8_t)v;
    }
    return SLM_OK;
}

void slm_zkeys_encode(const uint8_t key[SLM_ZKEY_BYTES],
                      char out[SLM_ZKEY_Z85_BUF])
{
    for (size_t g = 0; g < SLM_ZKEY_BYTES / 4; g++) {
        uint32_t v = (uint32_t)key[g * 4] << 24 |
                     (uint32_t)key[g * 4 + 1] << 16 |
                     (uint32_t)key[g * 4 + 2] << 8 | key[g * 4 + 3];
        for (int i = 4; i >= 0; i--) {
            out[g * 5 + (size_t)i] = z85_chars[v % 85];
            v /= 85;
        }
    }
    out[SLM_ZKEY_Z85_LEN] = '\0';
}

slm_status slm_zkeys_check_fd(int fd, const char *path, unsigned forbidden,
                              int allow_root)
{
    struct stat st;
    if (fstat(fd, &st) != 0)
        return slm_fail(SLM_ERR_IO, "%s: cannot stat: %s", path,
                        strerror(errno));
    if (!S_ISREG(st.st_mode))
        return slm_fail(SLM_ERR_IO, "%s: not a regular file", path);
    const uid_t me = geteuid();
    if (st.st_uid != me && !(allow_root && st.st_uid == 0))
        return slm_fail(SLM_ERR_IO,
                        "%s: owned by uid %u, not by this user (uid %u); "
                        "refusing it",
                        path, (unsigned)st.st_uid, (unsigned)me);
    const unsigned mode = (unsigned)st.st_mode & 07777;
    if (mode & forbidden)
        return slm_fail(SLM_ERR_IO, "%s: mode %04o is too open; %s", path, mode,
                        forbidden == 077 ? "chmod 600" : "chmod go-w");
    return SLM_OK;
}

slm_status slm_zkeys_read_checked(const char *path, int follow,
                                  unsigned forbidden, int allow_root, char *buf,
                                  size_t cap, size_t *len)
{
    *len = 0;
    const int flags = O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK |
                      (follow ? 0 : O_NOFOLLOW);
    const int fd = open(path, flags);
    if (fd < 0) {
        const int e = errno;
        if (e == ELOOP && !follow)
            return slm_fail(SLM_ERR_IO,
                            "%s: is a symbolic link; refusing to follow it "
                            "(point to the real file)",
                            path);
        return slm_fail(SLM_ERR_IO, "%s: cannot open: %s", path, strerror(e));
    }
    slm_status rc = slm_zkeys_check_fd(fd, path, forbidden, allow_root);
    size_t got = 0;
    while (rc == SLM_OK) {
        if (got == cap) {
            rc = slm_fail(SLM_ERR_FORMAT, "%s: too long (%zu bytes or more)",
                          path, cap);
            break;
        }
        const ssize_t n = read(fd, buf + got, cap - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            rc = slm_fail(SLM_ERR_IO, "%s: read failed: %s", path,
                          strerror(errno));
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    close(fd);
    if (rc != SLM_OK) {
        slm_zkeys_wipe(buf, got);
        return rc;
    }
    *len = got;
    return SLM_OK;
}

/* Checks that buf(len) is one key line and copies the 40 characters into
 * out[41] (on failure out is left zeroed). */
static slm_status parse_key_text(const char *path, const char *buf, size_t len,
                                 char out[SLM_ZKEY_Z85_BUF])
{
    memset(out, 0, SLM_ZKEY_Z85_BUF);
    if (len == SLM_ZKEY_Z85_LEN + 1 && buf[SLM_ZKEY_Z85_LEN] == '\n')
        len--;
    if (len != SLM_ZKEY_Z85_LEN)
        return slm_fail(SLM_ERR_FORMAT,
                        "%s: %zu bytes where a key is %d Z85 characters and "
                        "an optional newline",
                        path, len, SLM_ZKEY_Z85_LEN);
    uint8_t key[SLM_ZKEY_BYTES];
    slm_status rc = slm_zkeys_decode(buf, path, key);
    slm_zkeys_wipe(key, sizeof key);
    if (rc == SLM_OK)
        memcpy(out, buf, SLM_ZKEY_Z85_LEN);
    return rc;
}

slm_status slm_zkeys_load_secret(const char *path,
                                 char public_out[SLM_ZKEY_Z85_BUF],
                                 char secret_out[SLM_ZKEY_Z85_BUF])
{
    memset(public_out, 0, SLM_ZKEY_Z85_BUF);
    memset(secret_out, 0, SLM_ZKEY_Z85_BUF);
    char buf[64];
    size_t len = 0;
    slm_status rc =
        slm_zkeys_read_checked(path, 0, 077, 0, buf, sizeof buf, &len);
    if (rc == SLM_OK)
        rc = parse_key_text(path, buf, len, secret_out);
    slm_zkeys_wipe(buf, sizeof buf);
    if (rc == SLM_OK && zmq_curve_public(public_out, secret_out) != 0)
        rc = slm_fail(SLM_ERR_UNSUPPORTED,
                      "%s: cannot derive the public key: %s (is libzmq built "
                      "with CURVE?)",
                      path, zmq_strerror(zmq_errno()));
    if (rc != SLM_OK) {
        slm_zkeys_wipe(secret_out, SLM_ZKEY_Z85_BUF);
        memset(public_out, 0, SLM_ZKEY_Z85_BUF);
    }
    return rc;
}

slm_status slm_zkeys_load_public(const char *path, char out[SLM_ZKEY_Z85_BUF])
{
    memset(out, 0, SLM_ZKEY_Z85_BUF);
    char buf[64];
    size_t len = 0;
    SLM_CHECK(slm_zkeys_read_checked(path, 1, 022, 1, buf, sizeof buf, &len));
    return parse_key_text(path, buf, len, out);
}

/* Creates path exclusively with `mode` and writes text(len) to it. */
static slm_status create_key_file(const char *path, unsigned mode,
                                  const char *text, size_t len)
{
    const int fd =
        open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
             (mode_t)mode);
    if (fd < 0) {
        const int e = errno;
        return slm_fail(SLM_ERR_IO, "%s: cannot create: %s%s", path,
                        strerror(e),
                        e == EEXIST ? " (refusing to overwrite a key)" : "");
    }
    /* The umask may have taken bits away (never added any); set exactly. */
    slm_status rc = SLM_OK;
    if (fchmod(fd, (mode_t)mode) != 0)
        rc = slm_fail(SLM_ERR_IO, "%s: chmod: %s", path, strerror(errno));
    size_t done = 0;
    while (rc == SLM_OK && done < len) {
        const ssize_t n = write(fd, text + done, len - done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            rc = slm_fail(SLM_ERR_IO, "%s: write failed: %s", path,
                          n < 0 ? strerror(errno) : "no progress");
        else
            done += (size_t)n;
    }
    if (rc == SLM_OK && fsync(fd) != 0)
        rc = slm_fail(SLM_ERR_IO, "%s: fsync: %s", path, strerror(errno));
    if (close(fd) != 0 && rc == SLM_OK)
        rc = slm_fail(SLM_ERR_IO, "%s: close: %s", path, strerror(errno));
    if (rc != SLM_OK)
        unlink(path);
    return rc;
}

slm_status slm_zkeys_generate(const char *prefix)
{
    if (!prefix || !*prefix)
        return slm_fail(SLM_ERR_INVALID, "key generation: empty prefix");
    const size_t plen = strlen(prefix);
    if (plen > SLM_ZKEY_PREFIX_MAX)
        return slm_fail(SLM_ERR_RANGE,
                        "key generation: prefix of %zu bytes exceeds %d", plen,
                        SLM_ZKEY_PREFIX_MAX);
    char secret_path[SLM_ZKEY_PREFIX_MAX + 16];
    char public_path[SLM_ZKEY_PREFIX_MAX + 16];
    snprintf(secret_path, sizeof secret_path, "%s.key_secret", prefix);
    snprintf(public_path, sizeof public_path, "%s.key", prefix);

    char pub[SLM_ZKEY_Z85_BUF + 1], sec[SLM_ZKEY_Z85_BUF + 1];
    if (zmq_curve_keypair(pub, sec) != 0)
        return slm_fail(SLM_ERR_UNSUPPORTED,
                        "key generation: zmq_curve_keypair: %s (is libzmq "
                        "built with CURVE?)",
                        zmq_strerror(zmq_errno()));
    pub[SLM_ZKEY_Z85_LEN] = sec[SLM_ZKEY_Z85_LEN] = '\n';
    slm_status rc =
        create_key_file(secret_path, 0600, sec, SLM_ZKEY_Z85_LEN + 1);
    slm_zkeys_wipe(sec, sizeof sec);
    if (rc == SLM_OK) {
        rc = create_key_file(public_path, 0644, pub, SLM_ZKEY_Z85_LEN + 1);
        if (rc != SLM_OK)
            unlink(secret_path); /* ours: created exclusively above */
    }
    return rc;
}

/* A draft option in libzmq 4.3's header, honoured by its library. */
#ifndef ZMQ_ZAP_ENFORCE_DOMAIN
#define ZMQ_ZAP_ENFORCE_DOMAIN 93
#endif

slm_status slm_zkeys_apply_server(void *sock,
                                  const char secret[SLM_ZKEY_Z85_BUF],
                                  const char *zap_domain)
{
    const int one = 1;
    if (!zap_domain || !*zap_domain || strlen(zap_domain) > 254)
        return slm_fail(SLM_ERR_INVALID, "CURVE server: bad ZAP domain");
    if (zmq_setsockopt(sock, ZMQ_CURVE_SERVER, &one, sizeof one) != 0 ||
        zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, secret, SLM_ZKEY_Z85_BUF) !=
            0 ||
        zmq_setsockopt(sock, ZMQ_ZAP_DOMAIN, zap_domain, strlen(zap_domain)) !=
            0)
        return slm_fail(SLM_ERR_IO, "CURVE server: zmq_setsockopt: %s",
                        zmq_strerror(zmq_errno()));
    if (zmq_setsockopt(sock, ZMQ_ZAP_ENFORCE_DOMAIN, &one, sizeof one) != 0)
        return slm_fail(SLM_ERR_UNSUPPORTED,
                        "CURVE server: this libzmq cannot enforce ZAP "
                        "(ZMQ_ZAP_ENFORCE_DOMAIN: %s); refusing to run a "
                        "server that might admit any key",
                        zmq_strerror(zmq_errno()));
    return SLM_OK;
}

slm_status slm_zkeys_apply_client(void *sock,
                                  const char server_public[SLM_ZKEY_Z85_BUF],
                                  const char public_key[SLM_ZKEY_Z85_BUF],
                                  const char secret[SLM_ZKEY_Z85_BUF])
{
    if (zmq_setsockopt(sock, ZMQ_CURVE_SERVERKEY, server_public,
                       SLM_ZKEY_Z85_BUF) != 0 ||
        zmq_setsockopt(sock, ZMQ_CURVE_PUBLICKEY, public_key,
                       SLM_ZKEY_Z85_BUF) != 0 ||
        zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, secret, SLM_ZKEY_Z85_BUF) !=
            0)
        return slm_fail(SLM_ERR_IO, "CURVE client: zmq_setsockopt: %s",
                        zmq_strerror(zmq_errno()));
    return SLM_OK;
}

slm_status slm_zkeys_pair(char public_key[SLM_ZKEY_Z85_BUF],
                          char secret[SLM_ZKEY_Z85_BUF])
{
    if (zmq_curve_keypair(public_key, secret) != 0)
        return slm_fail(SLM_ERR_UNSUPPORTED,
                        "cannot make a CURVE key pair: %s (libzmq without "
                        "CURVE?)",
                        zmq_strerror(zmq_errno()));
    return SLM_OK;
}
