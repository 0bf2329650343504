/* common/keyfile.c - see keyfile.h. */
#include "common/keyfile.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void wipe(volatile uint8_t *p, size_t n)
{
    /* volatile: the compiler may not drop stores to a buffer about to die. */
    for (size_t i = 0; i < n; i++)
        p[i] = 0;
}

static const char *kind_name(slm_keyfile_kind kind)
{
    return kind == SLM_KEYFILE_SECRET ? "secret key" : "public key";
}

slm_status slm_keyfile_read(const char *path, slm_keyfile_kind kind,
                            uint8_t *buf, size_t cap, size_t *len)
{
    slm_status rc = SLM_OK;
    *len = 0;
    /* O_NONBLOCK: opening a FIFO for reading would otherwise wait for a
     * writer before fstat could refuse it. No effect on regular files. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0)
        return slm_fail(SLM_ERR_IO, "%s: cannot open %s file: %s", path,
                        kind_name(kind), strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        rc = slm_fail(SLM_ERR_IO, "%s: cannot stat: %s", path, strerror(errno));
        goto done;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = slm_fail(SLM_ERR_INVALID, "%s: %s file is not a regular file",
                      path, kind_name(kind));
        goto done;
    }
    if (st.st_uid != geteuid() && st.st_uid != 0) {
        rc = slm_fail(SLM_ERR_INVALID,
                      "%s: %s file is owned by uid %lu, not by this user "
                      "(uid %lu) or root",
                      path, kind_name(kind), (unsigned long)st.st_uid,
                      (unsigned long)geteuid());
        goto done;
    }
    const unsigned perm = (unsigned)st.st_mode & 07777u;
    if (kind == SLM_KEYFILE_SECRET && (perm & 077u) != 0) {
        rc = slm_fail(SLM_ERR_INVALID,
                      "%s: secret key file has mode %04o, which lets others "
                      "read or change it; it must be 0600 or stricter "
                      "(chmod 600 %s)",
                      path, perm, path);
        goto done;
    }
    if (kind == SLM_KEYFILE_PUBLIC && (perm & 022u) != 0) {
        rc = slm_fail(SLM_ERR_INVALID,
                      "%s: public key file has mode %04o, which lets others "
                      "replace it; it must not be group- or world-writable",
                      path, perm);
        goto done;
    }
    if (st.st_size < 0 || (uint64_t)st.st_size > cap) {
        rc = slm_fail(SLM_ERR_RANGE,
                      "%s: %s file is %lld bytes; at most %zu expected", path,
                      kind_name(kind), (long long)st.st_size, cap);
        goto done;
    }
    /* Read to EOF, but never past cap: the file may grow after fstat. */
    size_t got = 0;
    for (;;) {
        uint8_t extra;
        uint8_t *dst = got < cap ? buf + got : &extra;
        size_t want = got < cap ? cap - got : 1;
        ssize_t n = read(fd, dst, want);
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (n < 0) {
            rc = slm_fail(SLM_ERR_IO, "%s: read failed: %s", path,
                          strerror(errno));
            goto done;
        }
        if (n == 0)
            break;
        if (got >= cap) {
            rc = slm_fail(SLM_ERR_RANGE, "%s: %s file grew past %zu bytes",
                          path, kind_name(kind), cap);
            goto done;
        }
        got += (size_t)n;
    }
    *len = got;
done:
    close(fd);
    if (rc != SLM_OK)
        wipe(buf, cap);
    return rc;
}

slm_status slm_keyfile_write_new(const char *path, slm_keyfile_kind kind,
                                 const void *data, size_t len)
{
    const mode_t mode = kind == SLM_KEYFILE_SECRET ? 0600 : 0644;
    int fd =
        open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
    if (fd < 0) {
        int e = errno;
        if (e == EEXIST)
            return slm_fail(SLM_ERR_IO,
                            "%s: already exists; refusing to overwrite a key "
                            "file (remove it first)",
                            path);
        return slm_fail(SLM_ERR_IO, "%s: cannot create %s file: %s", path,
                        kind_name(kind), strerror(e));
    }
    const uint8_t *p = data;
    size_t left = len;
    while (left > 0) {
        ssize_t n = write(fd, p, left);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            int e = n < 0 ? errno : EIO;
            close(fd);
            unlink(path);
            return slm_fail(SLM_ERR_IO, "%s: write failed: %s", path,
                            strerror(e));
        }
        p += n;
        left -= (size_t)n;
    }
    int synced = fsync(fd) == 0 ? 0 : errno;
    int closed = close(fd) == 0 ? 0 : errno;
    if (synced != 0 || closed != 0) {
        int e = synced ? synced : closed;
        unlink(path);
        return slm_fail(SLM_ERR_IO, "%s: cannot flush: %s", path, strerror(e));
    }
    return SLM_OK;
}
