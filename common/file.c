/* common/file.c - bounded whole-file reads and read-only mappings. */
#include "common/file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static slm_status open_regular(const char *path, int *fd_out, size_t *size_out)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return slm_fail(SLM_ERR_IO, "%s: cannot open: %s", path,
                        strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return slm_fail(SLM_ERR_IO, "%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return slm_fail(SLM_ERR_IO, "%s: not a regular file", path);
    }
    if (st.st_size < 0 || (uint64_t)st.st_size > SIZE_MAX) {
        close(fd);
        return slm_fail(SLM_ERR_RANGE, "%s: size %lld not addressable", path,
                        (long long)st.st_size);
    }
    *fd_out = fd;
    *size_out = (size_t)st.st_size;
    return SLM_OK;
}

slm_status slm_file_read_all(const char *path, size_t max_bytes, uint8_t **out,
                             size_t *out_len)
{
    int fd = -1;
    size_t size = 0;
    SLM_CHECK(open_regular(path, &fd, &size));
    if (size > max_bytes) {
        close(fd);
        return slm_fail(SLM_ERR_RANGE, "%s: size %zu exceeds the limit of %zu",
                        path, size, max_bytes);
    }
    /* +1 so that an empty file still yields a valid, freeable pointer. */
    uint8_t *buf = malloc(size + 1);
    if (!buf) {
        close(fd);
        return slm_fail(SLM_ERR_NOMEM, "%s: cannot allocate %zu bytes", path,
                        size);
    }
    size_t got = 0;
    while (got < size) {
        ssize_t n = read(fd, buf + got, size - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            int e = errno;
            free(buf);
            close(fd);
            return slm_fail(SLM_ERR_IO, "%s: read failed at %zu: %s", path, got,
                            n == 0 ? "unexpected end" : strerror(e));
        }
        got += (size_t)n;
    }
    close(fd);
    *out = buf;
    *out_len = size;
    return SLM_OK;
}

slm_status slm_file_map_open(const char *path, slm_file_map *out)
{
    int fd = -1;
    size_t size = 0;
    SLM_CHECK(open_regular(path, &fd, &size));
    out->data = NULL;
    out->size = size;
    if (size > 0) {
        void *p = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            int e = errno;
            close(fd);
            return slm_fail(SLM_ERR_IO, "%s: mmap of %zu bytes failed: %s",
                            path, size, strerror(e));
        }
        out->data = p;
    }
    close(fd); /* the mapping keeps the file alive */
    return SLM_OK;
}

void slm_file_unmap(slm_file_map *m)
{
    if (m && m->data)
        munmap((void *)m->data, m->size);
    if (m) {
        m->data = NULL;
        m->size = 0;
    }
}
