/*
 * tests/unit/test_audit.c - common/audit.c: every line is one JSON object
 * that jansson parses back to the values recorded (hostile bytes included),
 * the file is private, threads never interleave, floods are summarized.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "common/audit.h"

static char g_dir[256];

static int make_dir(void **state)
{
    snprintf(g_dir, sizeof g_dir, "/tmp/slm-audit-XXXXXX");
    return mkdtemp(g_dir) ? 0 : -1;
}

static int remove_dir(void **state)
{
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* Reads path's lines into a JSON array (each line must parse as an object);
 * the caller json_decref's it. */
static json_t *read_lines(const char *path)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    json_t *all = json_array();
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    while ((n = getline(&line, &cap, f)) > 0) {
        assert_int_equal(line[n - 1], '\n');
        json_error_t err;
        json_t *o = json_loadb(line, (size_t)n - 1, 0, &err);
        if (!o)
            fail_msg("line is not JSON (%s): %s", err.text, line);
        assert_true(json_is_object(o));
        json_array_append_new(all, o);
    }
    free(line);
    fclose(f);
    return all;
}

static const char *field(json_t *o, const char *name)
{
    return json_string_value(json_object_get(o, name));
}

static void test_fields_and_file(void **state)
{
    char path[300];
    snprintf(path, sizeof path, "%s/audit.log", g_dir);
    slm_audit_t *a = NULL;
    assert_int_equal(slm_audit_open(&(slm_audit_options){.path = path}, &a),
                     SLM_OK);
    slm_audit_record(a, SLM_AUDIT_AUTH_REFUSED,
                     &(slm_audit_entry){.peer = "127.0.0.1",
                                        .domain = "shardlm-clients",
                                        .reason = "key not in the allowlist"});
    /* Admissions are off by default. */
    slm_audit_record(a, SLM_AUDIT_AUTH_ADMITTED,
                     &(slm_audit_entry){.tenant = "acme"});
    slm_audit_record(a, SLM_AUDIT_QUOTA_REJECTED, NULL);
    slm_audit_record(a, (slm_audit_event)99, NULL); /* ignored */
    slm_audit_record(NULL, SLM_AUDIT_QUOTA_REJECTED, NULL);
    unsigned long long written = 0;
    slm_audit_counts(a, &written, NULL);
    assert_int_equal(written, 2);
    slm_audit_close(&a);
    assert_null(a);
    slm_audit_close(&a);

    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    json_t *lines = read_lines(path);
    assert_int_equal(json_array_size(lines), 2);
    json_t *o = json_array_get(lines, 0);
    assert_string_equal(field(o, "event"), "auth_refused");
    assert_string_equal(field(o, "peer"), "127.0.0.1");
    assert_string_equal(field(o, "domain"), "shardlm-clients");
    assert_string_equal(field(o, "reason"), "key not in the allowlist");
    assert_null(json_object_get(o, "tenant"));
    const char *t = field(o, "time"); /* 2026-11-24T21:30:00.123Z */
    assert_non_null(t);
    assert_int_equal(strlen(t), 24);
    assert_true(t[4] == '-' && t[10] == 'T' && t[19] == '.' && t[23] == 'Z');
    assert_string_equal(field(json_array_get(lines, 1), "event"),
                        "quota_rejected");
    json_decref(lines);

    /* Appends to an existing file; admissions on when asked. */
    assert_int_equal(
        slm_audit_open(&(slm_audit_options){.path = path, .log_admitted = true},
                       &a),
        SLM_OK);
    slm_audit_record(a, SLM_AUDIT_AUTH_ADMITTED,
                     &(slm_audit_entry){.tenant = "acme"});
    slm_audit_close(&a);
    lines = read_lines(path);
    assert_int_equal(json_array_size(lines), 3);
    assert_string_equal(field(json_array_get(lines, 2), "tenant"), "acme");
    json_decref(lines);

    /* Unsafe files refused: writable by others, a symlink. */
    assert_int_equal(chmod(path, 0622), 0);
    assert_int_not_equal(slm_audit_open(&(slm_audit_options){.path = path}, &a),
                         SLM_OK);
    assert_non_null(strstr(slm_error_message(), "too open"));
    assert_null(a);
    assert_int_equal(chmod(path, 0644), 0); /* readable by others is fine */
    assert_int_equal(slm_audit_open(&(slm_audit_options){.path = path}, &a),
                     SLM_OK);
    slm_audit_close(&a);
    char link[300];
    snprintf(link, sizeof link, "%s/link.log", g_dir);
    assert_int_equal(symlink(path, link), 0);
    assert_int_not_equal(slm_audit_open(&(slm_audit_options){.path = link}, &a),
                         SLM_OK);
    assert_non_null(strstr(slm_error_message(), "symbolic link"));
    char nodir[300];
    snprintf(nodir, sizeof nodir, "%s/no/such/dir.log", g_dir);
    assert_int_not_equal(
        slm_audit_open(&(slm_audit_options){.path = nodir}, &a), SLM_OK);
}

static void test_escaping(void **state)
{
    /* Each hostile value and what jansson must decode it to. */
    static const struct {
        const char *in;
        const char *want;
    } cases[] = {
        {"plain", "plain"},
        {"q\"uo\\te", "q\"uo\\te"},
        {"ctl\n\r\t\b\f\x01\x1f\x7f end", "ctl\n\r\t\b\f\x01\x1f\x7f end"},
        {"caf\xc3\xa9 \xf0\x9f\x98\x80", "caf\xc3\xa9 \xf0\x9f\x98\x80"},
        {"bad\xff\xfe", "bad\xef\xbf\xbd\xef\xbf\xbd"},
        {"cut\xe2\x82", "cut\xef\xbf\xbd\xef\xbf\xbd"},
        {"overlong\xc0\xaf", "overlong\xef\xbf\xbd\xef\xbf\xbd"},
        {"surrogate\xed\xa0\x80",
         "surrogate\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"},
        {"sep\xe2\x80\xa8\xe2\x80\xa9", "sep\xe2\x80\xa8\xe2\x80\xa9"},
        {"\",\"event\":\"forged", "\",\"event\":\"forged"},
    };
    char path[300];
    snprintf(path, sizeof path, "%s/escape.log", g_dir);
    slm_audit_t *a = NULL;
    assert_int_equal(slm_audit_open(&(slm_audit_options){.path = path}, &a),
                     SLM_OK);
    const size_t n = sizeof cases / sizeof cases[0];
    for (size_t i = 0; i < n; i++)
        slm_audit_record(
            a, SLM_AUDIT_MALFORMED_MESSAGE,
            &(slm_audit_entry){.reason = cases[i].in, .peer = cases[i].in});
    slm_audit_close(&a);
    json_t *lines = read_lines(path);
    assert_int_equal(json_array_size(lines), n);
    for (size_t i = 0; i < n; i++) {
        json_t *o = json_array_get(lines, i);
        assert_string_equal(field(o, "event"), "malformed_message");
        assert_string_equal(field(o, "reason"), cases[i].want);
        assert_string_equal(field(o, "peer"), cases[i].want);
    }
    json_decref(lines);

    /* The raw bytes carry no control characters and no U+2028. */
    char out[64];
    slm_audit_escape("a\nb\xe2\x80\xa8", 6, out, sizeof out);
    assert_string_equal(out, "a\\nb\\u2028");
    /* Long values are cut at SLM_AUDIT_FIELD_MAX input bytes. */
    char *big = malloc(3 * SLM_AUDIT_FIELD_MAX);
    memset(big, 'x', 3 * SLM_AUDIT_FIELD_MAX);
    char *esc = malloc(8 * SLM_AUDIT_FIELD_MAX);
    assert_int_equal(slm_audit_escape(big, 3 * SLM_AUDIT_FIELD_MAX, esc,
                                      8 * SLM_AUDIT_FIELD_MAX),
                     SLM_AUDIT_FIELD_MAX);
    /* A small output stops at a whole escape, never mid-way. */
    memset(big, 1, 8);
    assert_int_equal(slm_audit_escape(big, 8, esc, 10), 6); /* \u0001 */
    assert_int_equal(slm_audit_escape(big, 8, esc, 0), 0);
    free(big);
    free(esc);
}

typedef struct {
    slm_audit_t *a;
    int id;
} worker_arg;

#define THREADS    8
#define PER_THREAD 400

static void *worker(void *p)
{
    worker_arg *w = p;
    char tenant[32];
    snprintf(tenant, sizeof tenant, "t%d", w->id);
    for (int i = 0; i < PER_THREAD; i++)
        slm_audit_record(w->a, SLM_AUDIT_QUOTA_REJECTED,
                         &(slm_audit_entry){.tenant = tenant,
                                            .reason = "over the token quota "
                                                      "for this minute"});
    return NULL;
}

static void test_threads(void **state)
{
    char path[300];
    snprintf(path, sizeof path, "%s/threads.log", g_dir);
    slm_audit_t *a = NULL;
    assert_int_equal(
        slm_audit_open(
            &(slm_audit_options){.path = path, .max_per_second = 1000000}, &a),
        SLM_OK);
    pthread_t t[THREADS];
    worker_arg w[THREADS];
    for (int i = 0; i < THREADS; i++) {
        w[i] = (worker_arg){a, i};
        assert_int_equal(pthread_create(&t[i], NULL, worker, &w[i]), 0);
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    slm_audit_close(&a);
    json_t *lines = read_lines(path);
    assert_int_equal(json_array_size(lines), THREADS * PER_THREAD);
    int per[THREADS] = {0};
    for (size_t i = 0; i < json_array_size(lines); i++) {
        const char *tn = field(json_array_get(lines, i), "tenant");
        assert_non_null(tn);
        per[atoi(tn + 1)]++;
    }
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(per[i], PER_THREAD);
    json_decref(lines);
}

static void test_flood_control(void **state)
{
    char path[300];
    snprintf(path, sizeof path, "%s/flood.log", g_dir);
    slm_audit_t *a = NULL;
    assert_int_equal(
        slm_audit_open(&(slm_audit_options){.path = path, .max_per_second = 5},
                       &a),
        SLM_OK);
    for (int i = 0; i < 100; i++)
        slm_audit_record(a, SLM_AUDIT_AUTH_REFUSED,
                         &(slm_audit_entry){.peer = "10.0.0.1"});
    /* Another kind has its own budget. */
    slm_audit_record(a, SLM_AUDIT_MANIFEST_FAILURE,
                     &(slm_audit_entry){.reason = "bad signature"});
    unsigned long long written = 0, suppressed = 0;
    slm_audit_counts(a, &written, &suppressed);
    assert_int_equal(written, 6);
    assert_int_equal(suppressed, 95);
    usleep(1100 * 1000); /* the next window reports the count first */
    slm_audit_record(a, SLM_AUDIT_AUTH_REFUSED,
                     &(slm_audit_entry){.peer = "10.0.0.2"});
    for (int i = 0; i < 9; i++) /* 4 written, 5 suppressed: said at close */
        slm_audit_record(a, SLM_AUDIT_AUTH_REFUSED, NULL);
    slm_audit_close(&a);
    json_t *lines = read_lines(path);
    /* 5 + 1 + summary(95) + 5 + summary(5) */
    assert_int_equal(json_array_size(lines), 13);
    json_t *s = json_array_get(lines, 6);
    assert_string_equal(field(s, "event"), "audit_suppressed");
    assert_string_equal(field(s, "of"), "auth_refused");
    assert_int_equal(json_integer_value(json_object_get(s, "count")), 95);
    assert_string_equal(field(json_array_get(lines, 7), "peer"), "10.0.0.2");
    s = json_array_get(lines, 12);
    assert_string_equal(field(s, "event"), "audit_suppressed");
    assert_int_equal(json_integer_value(json_object_get(s, "count")), 5);
    json_decref(lines);
}

static void test_stderr(void **state)
{
    char path[300];
    snprintf(path, sizeof path, "%s/stderr.log", g_dir);
    fflush(stderr);
    const int saved = dup(2);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    dup2(fileno(f), 2);
    slm_audit_t *a = NULL;
    assert_int_equal(slm_audit_open(NULL, &a), SLM_OK);
    slm_audit_record(a, SLM_AUDIT_MANIFEST_FAILURE,
                     &(slm_audit_entry){.reason = "digest mismatch"});
    slm_audit_close(&a);
    dup2(saved, 2);
    close(saved);
    fclose(f);
    json_t *lines = read_lines(path);
    assert_int_equal(json_array_size(lines), 1);
    assert_string_equal(field(json_array_get(lines, 0), "event"),
                        "manifest_failure");
    json_decref(lines);
    assert_string_equal(slm_audit_event_name((slm_audit_event)-1), "unknown");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fields_and_file),
        cmocka_unit_test(test_escaping),
        cmocka_unit_test(test_threads),
        cmocka_unit_test(test_flood_control),
        cmocka_unit_test(test_stderr),
    };
    return cmocka_run_group_tests(tests, make_dir, remove_dir);
}
