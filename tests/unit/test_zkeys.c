/*
 * tests/unit/test_zkeys.c - common/zkeys.c: key pairs generated and read
 * back, and every unsafe or malformed key file refused with a message that
 * names the file and the problem.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <zmq.h>

#include "common/zkeys.h"

static char g_dir[256];

static int make_dir(void **state)
{
    snprintf(g_dir, sizeof g_dir, "/tmp/slm-zkeys-XXXXXX");
    return mkdtemp(g_dir) ? 0 : -1;
}

static int remove_dir(void **state)
{
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    return system(cmd) == 0 ? 0 : -1;
}

static void path_in(char *buf, size_t cap, const char *name)
{
    snprintf(buf, cap, "%s/%s", g_dir, name);
}

static void write_file(const char *path, const char *text, size_t len,
                       mode_t mode)
{
    unlink(path);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
    assert_int_equal(chmod(path, mode), 0);
}

static void read_text(const char *path, char *buf, size_t cap)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    size_t n = fread(buf, 1, cap - 1, f);
    buf[n] = '\0';
    fclose(f);
}

/* Asserts that the last error mentions every one of the given strings. */
static void expect_message(const char *a, const char *b)
{
    const char *m = slm_error_message();
    if (!strstr(m, a) || (b && !strstr(m, b)))
        fail_msg("message '%s' lacks '%s' / '%s'", m, a, b ? b : "");
}

static void test_generate_and_load(void **state)
{
    char prefix[300], sec[320], pub[320];
    path_in(prefix, sizeof prefix, "server");
    snprintf(sec, sizeof sec, "%s.key_secret", prefix);
    snprintf(pub, sizeof pub, "%s.key", prefix);
    assert_int_equal(slm_zkeys_generate(prefix), SLM_OK);

    struct stat st;
    assert_int_equal(stat(sec, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(st.st_size, 41);
    assert_int_equal(stat(pub, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0644);

    char p1[SLM_ZKEY_Z85_BUF], s1[SLM_ZKEY_Z85_BUF], p2[SLM_ZKEY_Z85_BUF];
    assert_int_equal(slm_zkeys_load_secret(sec, p1, s1), SLM_OK);
    assert_int_equal(slm_zkeys_load_public(pub, p2), SLM_OK);
    assert_string_equal(p1, p2);
    assert_int_equal(strlen(s1), 40);
    char text[64];
    read_text(pub, text, sizeof text);
    assert_int_equal(strncmp(text, p2, 40), 0);

    /* The pair works with libzmq: the derived public key is libzmq's. */
    char derived[SLM_ZKEY_Z85_BUF];
    assert_int_equal(zmq_curve_public(derived, s1), 0);
    assert_string_equal(derived, p1);
    /* And round-trips through our codec. */
    uint8_t raw[32];
    char again[SLM_ZKEY_Z85_BUF];
    assert_int_equal(slm_zkeys_decode(p1, "test", raw), SLM_OK);
    slm_zkeys_encode(raw, again);
    assert_string_equal(again, p1);
    uint8_t zraw[32];
    assert_non_null(zmq_z85_decode(zraw, p1));
    assert_memory_equal(zraw, raw, 32);
    slm_zkeys_wipe(s1, sizeof s1);
    for (size_t i = 0; i < sizeof s1; i++)
        assert_int_equal(s1[i], 0);

    /* Never overwritten: both files keep their contents. */
    char before[64], after[64];
    read_text(sec, before, sizeof before);
    assert_int_not_equal(slm_zkeys_generate(prefix), SLM_OK);
    expect_message("server.key_secret", "refusing to overwrite");
    read_text(sec, after, sizeof after);
    assert_string_equal(before, after);
}

static void test_generate_refuses_existing_public(void **state)
{
    char prefix[300], sec[320], pub[320];
    path_in(prefix, sizeof prefix, "half");
    snprintf(sec, sizeof sec, "%s.key_secret", prefix);
    snprintf(pub, sizeof pub, "%s.key", prefix);
    write_file(pub, "x\n", 2, 0644);
    assert_int_not_equal(slm_zkeys_generate(prefix), SLM_OK);
    expect_message("half.key", "refusing to overwrite");
    /* The secret made first was removed again. */
    assert_int_not_equal(access(sec, F_OK), 0);

    /* A symlink planted where the secret goes is not followed. */
    char target[320], prefix2[300], sec2[320];
    path_in(target, sizeof target, "victim");
    path_in(prefix2, sizeof prefix2, "planted");
    snprintf(sec2, sizeof sec2, "%s.key_secret", prefix2);
    write_file(target, "keep", 4, 0600);
    assert_int_equal(symlink(target, sec2), 0);
    assert_int_not_equal(slm_zkeys_generate(prefix2), SLM_OK);
    char text[16];
    read_text(target, text, sizeof text);
    assert_string_equal(text, "keep");

    assert_int_not_equal(slm_zkeys_generate(""), SLM_OK);
    char *huge = malloc(SLM_ZKEY_PREFIX_MAX + 2);
    memset(huge, 'a', SLM_ZKEY_PREFIX_MAX + 1);
    huge[SLM_ZKEY_PREFIX_MAX + 1] = '\0';
    assert_int_equal(slm_zkeys_generate(huge), SLM_ERR_RANGE);
    free(huge);
}

/* A valid secret key in Z85, made fresh. */
static void fresh_secret(char sec[SLM_ZKEY_Z85_BUF])
{
    char pub[SLM_ZKEY_Z85_BUF];
    assert_int_equal(zmq_curve_keypair(pub, sec), 0);
}

static void test_unsafe_files_refused(void **state)
{
    char sec[SLM_ZKEY_Z85_BUF], line[48], path[300];
    char p[SLM_ZKEY_Z85_BUF], s[SLM_ZKEY_Z85_BUF];
    fresh_secret(sec);
    snprintf(line, sizeof line, "%s\n", sec);
    path_in(path, sizeof path, "k.key_secret");

    write_file(path, line, 41, 0600);
    assert_int_equal(slm_zkeys_load_secret(path, p, s), SLM_OK);
    /* Without the newline is fine too. */
    write_file(path, line, 40, 0400);
    assert_int_equal(slm_zkeys_load_secret(path, p, s), SLM_OK);

    write_file(path, line, 41, 0644);
    assert_int_not_equal(slm_zkeys_load_secret(path, p, s), SLM_OK);
    expect_message("k.key_secret: mode 0644 is too open; chmod 600", NULL);
    assert_int_equal(p[0], 0); /* outputs zeroed on failure */
    assert_int_equal(s[0], 0);
    write_file(path, line, 41, 0640);
    assert_int_not_equal(slm_zkeys_load_secret(path, p, s), SLM_OK);
    expect_message("mode 0640 is too open", NULL);
    write_file(path, line, 41, 0601);
    assert_int_not_equal(slm_zkeys_load_secret(path, p, s), SLM_OK);

    /* A symlink to a good file is still refused. */
    char link[300];
    path_in(link, sizeof link, "link.key_secret");
    write_file(path, line, 41, 0600);
    assert_int_equal(symlink(path, link), 0);
    assert_int_not_equal(slm_zkeys_load_secret(link, p, s), SLM_OK);
    expect_message("link.key_secret", "symbolic link");

    /* A directory and a FIFO (which must not hang the open). */
    char dir[300], fifo[300];
    path_in(dir, sizeof dir, "adir");
    assert_int_equal(mkdir(dir, 0700), 0);
    assert_int_not_equal(slm_zkeys_load_secret(dir, p, s), SLM_OK);
    expect_message("adir", "not a regular file");
    path_in(fifo, sizeof fifo, "fifo");
    assert_int_equal(mkfifo(fifo, 0600), 0);
    assert_int_not_equal(slm_zkeys_load_secret(fifo, p, s), SLM_OK);
    expect_message("fifo", "not a regular file");

    char missing[300];
    path_in(missing, sizeof missing, "missing.key_secret");
    assert_int_equal(slm_zkeys_load_secret(missing, p, s), SLM_ERR_IO);
    expect_message("missing.key_secret", "No such file");

    /* Another owner: only root can make one here. */
    if (geteuid() == 0) {
        write_file(path, line, 41, 0600);
        assert_int_equal(chown(path, 65534, 65534), 0);
        assert_int_not_equal(slm_zkeys_load_secret(path, p, s), SLM_OK);
        expect_message("k.key_secret: owned by uid 65534", NULL);
        /* The public loader accepts root's or ours only, too. */
        assert_int_not_equal(slm_zkeys_load_public(path, p), SLM_OK);
        unlink(path);
    } else {
        fprintf(stderr, "(not root: the other-owner case is skipped)\n");
    }
}

static void test_malformed_keys_refused(void **state)
{
    char sec[SLM_ZKEY_Z85_BUF], buf[128], path[300];
    char p[SLM_ZKEY_Z85_BUF], s[SLM_ZKEY_Z85_BUF];
    fresh_secret(sec);
    path_in(path, sizeof path, "bad.key_secret");

    /* Truncated, empty, too long, trailing junk, two newlines, CRLF. */
    write_file(path, sec, 39, 0600);
    assert_int_equal(slm_zkeys_load_secret(path, p, s), SLM_ERR_FORMAT);
    expect_message("bad.key_secret: 39 bytes", NULL);
    write_file(path, "", 0, 0600);
    assert_int_equal(slm_zkeys_load_secret(path, p, s), SLM_ERR_FORMAT);
    snprintf(buf, sizeof buf, "%s\n\n", sec);
    write_file(path, buf, 42, 0600);
    assert_int_equal(slm_zkeys_load_secret(path, p, s), SLM_ERR_FORMAT);
    snprintf(buf, sizeof buf, "%s\r\n", sec);
    write_file(path, buf, 42, 0600);
    assert_int_equal(slm_zkeys_load_secret(path, p, s), SLM_ERR_FORMAT);
    snprintf(buf, sizeof buf, "%sX", sec);
    write_file(path, buf, 41, 0600);
    assert_int_equal(slm_zkeys_load_secret(path, p, s), SLM_ERR_FORMAT);
    memset(buf, 'a', sizeof buf);
    write_file(path, buf, sizeof buf, 0600);
    assert_int_equal(slm_zkeys_load_secret(path, p, s), SLM_ERR_FORMAT);
    expect_message("bad.key_secret", "too long");

    /* Characters outside Z85: space, quote, tilde, NUL, a high byte. */
    const char bad[] = {' ', '"', '~', '\0', (char)0xc3, ','};
    for (size_t i = 0; i < sizeof bad; i++) {
        memcpy(buf, sec, 40);
        buf[17] = bad[i];
        buf[40] = '\n';
        write_file(path, buf, 41, 0600);
        assert_int_equal(slm_zkeys_load_secret(path, p, s), SLM_ERR_FORMAT);
        expect_message("character 18", "not Z85");
    }
    /* Z85 characters whose group overflows 32 bits ('#' leads = 84*85^4). */
    memcpy(buf, sec, 40);
    memcpy(buf + 5, "#####", 5);
    write_file(path, buf, 40, 0600);
    assert_int_equal(slm_zkeys_load_secret(path, p, s), SLM_ERR_FORMAT);
    expect_message("characters 6-10", "overflow");
    /* The largest group that fits: "%nSc0" = 0xffffffff. */
    uint8_t raw[32];
    memset(raw, 0xff, sizeof raw);
    char enc[SLM_ZKEY_Z85_BUF];
    slm_zkeys_encode(raw, enc);
    assert_memory_equal(enc, "%nSc0", 5);
    uint8_t back[32];
    assert_int_equal(slm_zkeys_decode(enc, "max", back), SLM_OK);
    assert_memory_equal(back, raw, 32);

    /* Public keys: world-writable refused, 0644 fine, symlink followed. */
    char pub[SLM_ZKEY_Z85_BUF], pubpath[300], link[300];
    assert_int_equal(zmq_curve_keypair(pub, sec), 0);
    path_in(pubpath, sizeof pubpath, "srv.key");
    snprintf(buf, sizeof buf, "%s\n", pub);
    write_file(pubpath, buf, 41, 0644);
    assert_int_equal(slm_zkeys_load_public(pubpath, p), SLM_OK);
    assert_string_equal(p, pub);
    path_in(link, sizeof link, "srv-link.key");
    assert_int_equal(symlink(pubpath, link), 0);
    assert_int_equal(slm_zkeys_load_public(link, p), SLM_OK);
    write_file(pubpath, buf, 41, 0666);
    assert_int_not_equal(slm_zkeys_load_public(pubpath, p), SLM_OK);
    expect_message("mode 0666 is too open", "chmod go-w");
    write_file(pubpath, buf, 30, 0644);
    assert_int_equal(slm_zkeys_load_public(pubpath, p), SLM_ERR_FORMAT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_generate_and_load),
        cmocka_unit_test(test_generate_refuses_existing_public),
        cmocka_unit_test(test_unsafe_files_refused),
        cmocka_unit_test(test_malformed_keys_refused),
    };
    return cmocka_run_group_tests(tests, make_dir, remove_dir);
}
