/* Fast path of sketchwatch's JSON Lines parser (connectors/parsing.py).
 *
 * scan(lines, names, kinds, columns, ok, max_bytes) reads each line as a flat JSON object and
 * writes the schema's fields straight into preallocated columns (numpy arrays: object for 's',
 * int64 for 'i', float64 else), without building a dict per record. It returns, per field, the
 * list of (row, text) of a 't' field's string values, None for other fields. It accepts only
 * lines whose meaning is beyond doubt and leaves every other line (ok[i] = 0) to the Python
 * reference path, which decides and words the dead letters. A line is taken when it is ASCII,
 * at most max_bytes long, holds no backslash and no control character inside strings, is one
 * object of keys and scalar values (no nesting), names every schema field exactly once, and each
 * field's value has the expected JSON type:
 *   's' str field: a string (a number would need Python's int-to-text rules: left to Python)
 *   'f' float field: a number, converted like Python's float() (correctly rounded)
 *   'i' int field: an integer literal of at most 18 digits
 *   't' timestamp field: a number as for 'f', or a string handed back for Python to read
 * Values of other keys may be strings, numbers, true, false or null. Range checks stay in Python.
 *
 * Equal strings of a column share one object while the column repeats enough (an interning
 * table per column, given up once more than half of the first 8192 values were new), which is
 * what the Python path does too: only object identity depends on it.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MAX_FIELDS 16
#define NUMBER_CHARS 64     /* longer number literals are left to Python */
#define INTERN_PROBE 8192
#define INTERN_MAX 65536

typedef struct {
    uint64_t hash;
    PyObject *str; /* a reference of the table's own: a refused line drops its strings */
} Slot;

typedef struct {
    Slot *slots;
    Py_ssize_t cap, used, seen;
    int off;
} Interner;

static uint64_t text_hash(const char *p, Py_ssize_t n) {
    uint64_t h = 0x9e3779b97f4a7c15ULL ^ (uint64_t)n;
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        h = (h ^ w) * 0xff51afd7ed558ccdULL;
        h ^= h >> 29;
        p += 8;
        n -= 8;
    }
    uint64_t w = 0;
    memcpy(&w, p, (size_t)n);
    h = (h ^ w) * 0xc4ceb9fe1a85ec53ULL;
    return h ^ (h >> 32);
}

static PyObject *new_ascii(const char *p, Py_ssize_t n) {
    PyObject *s = PyUnicode_New(n, 127);
    if (s != NULL)
        memcpy(PyUnicode_1BYTE_DATA(s), p, (size_t)n);
    return s;
}

static int interner_grow(Interner *t) {
    Py_ssize_t cap = t->cap ? t->cap * 2 : 1024;
    Slot *slots = PyMem_Calloc((size_t)cap, sizeof(Slot));
    if (slots == NULL)
        return -1;
    for (Py_ssize_t i = 0; i < t->cap; i++) {
        if (t->slots[i].str == NULL)
            continue;
        Py_ssize_t j = (Py_ssize_t)(t->slots[i].hash & (uint64_t)(cap - 1));
        while (slots[j].str != NULL)
            j = (j + 1) & (cap - 1);
        slots[j] = t->slots[i];
    }
    PyMem_Free(t->slots);
    t->slots = slots;
    t->cap = cap;
    return 0;
}

/* A new reference to a str equal to p[0:n], shared with earlier equal values when interning. */
static PyObject *interned(Interner *t, const char *p, Py_ssize_t n) {
    if (t->off)
        return new_ascii(p, n);
    t->seen++;
    if (t->seen >= INTERN_PROBE && 2 * t->used > t->seen) {
        t->off = 1; /* mostly distinct values (ids): interning would only cost */
        return new_ascii(p, n);
    }
    if (2 * (t->used + 1) > t->cap) {
        if (t->cap >= INTERN_MAX)
            return new_ascii(p, n);
        if (interner_grow(t) < 0) {
            PyErr_NoMemory();
            return NULL;
        }
    }
    uint64_t h = text_hash(p, n);
    Py_ssize_t j = (Py_ssize_t)(h & (uint64_t)(t->cap - 1));
    while (t->slots[j].str != NULL) {
        PyObject *s = t->slots[j].str;
        if (t->slots[j].hash == h && PyUnicode_GET_LENGTH(s) == n && memcmp(PyUnicode_1BYTE_DATA(s), p, (size_t)n) == 0) {
            Py_INCREF(s);
            return s;
        }
        j = (j + 1) & (t->cap - 1);
    }
    PyObject *s = new_ascii(p, n);
    if (s != NULL) {
        t->slots[j].hash = h;
        t->slots[j].str = s;
        Py_INCREF(s);
        t->used++;
    }
    return s;
}

/* ---- the scanner: each returns the position after what it read, or NULL when the line is
 * not for the fast path. ---- */

static inline const char *skip_ws(const char *p, const char *end) {
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n'))
        p++;
    return p;
}

#define ONES 0x0101010101010101ULL
#define HIGHS 0x8080808080808080ULL

/* High bit of each byte of w that ends a plain string ('"') or rules it out (a backslash, a
 * control character, a non-ASCII byte). The lowest flagged byte is always a true one (borrows
 * only run upwards), which is all the caller reads. */
static inline uint64_t string_stops(uint64_t w) {
    uint64_t quote = w ^ (ONES * '"'), slash = w ^ (ONES * '\\');
    return ((quote - ONES) & ~quote & HIGHS) | ((slash - ONES) & ~slash & HIGHS) | ((w - ONES * 0x20) & ~w & HIGHS) |
           (w & HIGHS);
}

/* A string without escapes or control characters; its contents go to start and len. Eight
 * bytes at a time: the plain text between the quotes is most of a line. */
static inline const char *read_string(const char *p, const char *end, const char **start, Py_ssize_t *len) {
    if (p >= end || *p != '"')
        return NULL;
    const char *s = ++p;
    for (; end - p >= 8; p += 8) {
        uint64_t w, stops;
        memcpy(&w, p, 8);
        if ((stops = string_stops(w)) != 0) {
            p += __builtin_ctzll(stops) >> 3;
            goto found;
        }
    }
    while (p < end && *p != '"' && (unsigned char)*p >= 0x20 && *p != '\\' && (unsigned char)*p < 0x80)
        p++;
found:
    if (p >= end || *p != '"')
        return NULL;
    *start = s;
    *len = p - s;
    return p + 1;
}

/* Past one or more digits, or NULL if there is none. */
static inline const char *skip_digits(const char *p, const char *end) {
    const char *start = p;
    while (p < end && *p >= '0' && *p <= '9')
        p++;
    return p == start ? NULL : p;
}

/* A JSON number; *integral tells whether it had neither fraction nor exponent. */
static inline const char *read_number(const char *p, const char *end, int *integral) {
    const char *s = p;
    if (p < end && *p == '-')
        p++;
    if (p >= end)
        return NULL;
    if (*p == '0')
        p++;
    else if (*p >= '1' && *p <= '9')
        while (p < end && *p >= '0' && *p <= '9')
            p++;
    else
        return NULL;
    *integral = 1;
    if (p < end && *p == '.') {
        if ((p = skip_digits(p + 1, end)) == NULL)
            return NULL;
        *integral = 0;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < end && (*p == '+' || *p == '-'))
            p++;
        if ((p = skip_digits(p, end)) == NULL)
            return NULL;
        *integral = 0;
    }
    return p - s <= NUMBER_CHARS ? p : NULL;
}

static inline const char *skip_literal(const char *p, const char *end) {
    static const char *words[] = {"true", "false", "null"};
    for (int w = 0; w < 3; w++) {
        size_t n = strlen(words[w]);
        if ((size_t)(end - p) >= n && memcmp(p, words[w], n) == 0)
            return p + n;
    }
    return NULL;
}

typedef struct {
    Py_ssize_t nfields;
    const char *name[MAX_FIELDS];
    Py_ssize_t name_len[MAX_FIELDS];
    char kind[MAX_FIELDS];
    double *f64[MAX_FIELDS];
    int64_t *i64[MAX_FIELDS];
    PyObject **objs[MAX_FIELDS]; /* 's' fields: their object column */
    PyObject *texts[MAX_FIELDS]; /* 't' fields: list of (row, str) for Python to read */
    Interner intern[MAX_FIELDS];
} Columns;

/* The schema field named k, trying `hint` first (lines usually list the fields in one order). */
static Py_ssize_t field_of(const Columns *c, const char *k, Py_ssize_t n, Py_ssize_t hint) {
    for (Py_ssize_t i = 0; i < c->nfields; i++) {
        Py_ssize_t f = (hint + i) % c->nfields;
        if (c->name_len[f] == n && memcmp(c->name[f], k, (size_t)n) == 0)
            return f;
    }
    return -1;
}

/* Clinger's fast path: a decimal of at most 2**53 as an integer w times 10**e with |e| <= 22 is
 * w * 10**e or w / 10**-e, one correctly rounded IEEE operation on two exact doubles, so it
 * equals the correctly rounded value Python's float() gives. 0: not of that form. */
static int exact_double(const char *p, const char *end, double *out) {
    static const double pow10[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
                                   1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};
    int negative = *p == '-';
    p += negative;
    uint64_t w = 0;
    int digits = 0, exp10 = 0;
    for (; p < end && *p >= '0' && *p <= '9'; p++, digits++)
        w = w * 10 + (uint64_t)(*p - '0');
    if (p < end && *p == '.')
        for (p++; p < end && *p >= '0' && *p <= '9'; p++, digits++, exp10--)
            w = w * 10 + (uint64_t)(*p - '0');
    if (p < end) {
        int sign = 1, x = 0;
        p++; /* e or E */
        if (*p == '+' || *p == '-')
            sign = *p++ == '-' ? -1 : 1;
        for (; p < end; p++)
            if ((x = x * 10 + (*p - '0')) > 400)
                return 0;
        exp10 += sign * x;
    }
    if (digits > 19 || w > (1ULL << 53) || exp10 < -22 || exp10 > 22)
        return 0; /* 19 digits cannot overflow the uint64 above */
    double x = exp10 < 0 ? (double)w / pow10[-exp10] : (double)w * pow10[exp10];
    *out = negative ? -x : x;
    return 1;
}

static int store_number(const Columns *c, Py_ssize_t f, Py_ssize_t row, const char *s, const char *e, int integral) {
    char buf[NUMBER_CHARS + 1];
    Py_ssize_t n = e - s;
    memcpy(buf, s, (size_t)n);
    buf[n] = '\0';
    if (c->kind[f] == 'i') {
        if (!integral || n > 18 + (s[0] == '-'))
            return 0;
        c->i64[f][row] = strtoll(buf, NULL, 10);
        return 1;
    }
    double x;
    if (!exact_double(s, e, &x)) {
        x = PyOS_string_to_double(buf, NULL, NULL);
        if (x == -1.0 && PyErr_Occurred())
            return -1;
    }
    if (!isfinite(x))
        return 0; /* too large for a float: Python words the dead letter */
    if (integral && x == 0.0)
        x = 0.0; /* "-0" is the integer 0, so +0.0 as Python's float(0) */
    c->f64[f][row] = x;
    return 1;
}

/* Line -> columns at row. 1: taken; 0: left to Python; -1: error set. Values stored for a line
 * that is later refused stay in the columns but are never read (ok[row] == 0). */
static int scan_line(Columns *c, const char *p, const char *end, Py_ssize_t row, PyObject **pending) {
    uint32_t seen = 0;
    Py_ssize_t hint = 0;
    p = skip_ws(p, end);
    if (p >= end || *p != '{')
        return 0;
    p = skip_ws(p + 1, end);
    if (p < end && *p == '}')
        return 0; /* no fields */
    for (;;) {
        const char *k;
        Py_ssize_t klen;
        if ((p = read_string(p, end, &k, &klen)) == NULL)
            return 0;
        p = skip_ws(p, end);
        if (p >= end || *p != ':')
            return 0;
        p = skip_ws(p + 1, end);
        if (p >= end)
            return 0;
        Py_ssize_t f = field_of(c, k, klen, hint);
        if (f >= 0 && (seen >> f) & 1)
            return 0; /* a repeated field: the decoders keep the last one; Python decides */
        if (*p == '"') {
            const char *v;
            Py_ssize_t vlen;
            if ((p = read_string(p, end, &v, &vlen)) == NULL)
                return 0;
            if (f >= 0) {
                if (c->kind[f] != 's' && c->kind[f] != 't')
                    return 0;
                PyObject *s = c->kind[f] == 's' ? interned(&c->intern[f], v, vlen) : new_ascii(v, vlen);
                if (s == NULL)
                    return -1;
                Py_XDECREF(pending[f]);
                pending[f] = s;
            }
        } else if (*p == '-' || (*p >= '0' && *p <= '9')) {
            const char *s = p;
            int integral;
            if ((p = read_number(p, end, &integral)) == NULL)
                return 0;
            if (f >= 0) {
                if (c->kind[f] == 's')
                    return 0;
                int r = store_number(c, f, row, s, p, integral);
                if (r <= 0)
                    return r;
            }
        } else {
            if (f >= 0 || (p = skip_literal(p, end)) == NULL)
                return 0;
        }
        if (f >= 0) {
            seen |= 1u << f;
            hint = f + 1;
        }
        p = skip_ws(p, end);
        if (p >= end)
            return 0;
        if (*p == '}')
            break;
        if (*p != ',')
            return 0;
        p = skip_ws(p + 1, end);
    }
    if (skip_ws(p + 1, end) != end || seen != (1u << c->nfields) - 1)
        return 0;
    return 1;
}

/* Hand the line's strings to their columns (pending[f] is a new reference, or NULL). */
static int commit_strings(Columns *c, Py_ssize_t row, PyObject **pending) {
    for (Py_ssize_t f = 0; f < c->nfields; f++) {
        PyObject *s = pending[f];
        if (s == NULL)
            continue;
        pending[f] = NULL;
        if (c->kind[f] == 's') {
            PyObject *old = c->objs[f][row];
            c->objs[f][row] = s; /* steals */
            Py_XDECREF(old);
            continue;
        }
        PyObject *item = Py_BuildValue("(nN)", row, s);
        if (item == NULL || PyList_Append(c->texts[f], item) < 0) {
            Py_XDECREF(item);
            return -1;
        }
        Py_DECREF(item);
    }
    return 0;
}

static void drop_pending(Columns *c, PyObject **pending) {
    for (Py_ssize_t f = 0; f < c->nfields; f++)
        Py_CLEAR(pending[f]);
}

static int scan_all(Columns *c, PyObject *lines, uint8_t *ok, Py_ssize_t max_bytes) {
    Py_ssize_t n = PyList_GET_SIZE(lines);
    PyObject *pending[MAX_FIELDS] = {NULL};
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *line = PyList_GET_ITEM(lines, i);
        ok[i] = 0;
        if (!PyBytes_CheckExact(line) || PyBytes_GET_SIZE(line) > max_bytes)
            continue;
        const char *p = PyBytes_AS_STRING(line);
        int r = scan_line(c, p, p + PyBytes_GET_SIZE(line), i, pending);
        if (r == 1) {
            if (commit_strings(c, i, pending) < 0)
                r = -1;
            else
                ok[i] = 1;
        }
        drop_pending(c, pending);
        if (r < 0)
            return -1;
    }
    return 0;
}

static void release(Py_buffer *views, Py_ssize_t count) {
    for (Py_ssize_t f = 0; f < count; f++)
        if (views[f].obj != NULL)
            PyBuffer_Release(&views[f]);
}

static int setup_columns(Columns *c, PyObject *names, const char *kinds, PyObject *columns, Py_ssize_t n, Py_buffer *views) {
    c->nfields = PyTuple_GET_SIZE(names);
    for (Py_ssize_t f = 0; f < c->nfields; f++) {
        PyObject *name = PyTuple_GET_ITEM(names, f);
        if (!PyUnicode_Check(name) || !PyUnicode_IS_ASCII(name)) {
            PyErr_SetString(PyExc_ValueError, "scan: field names must be ASCII str");
            return -1;
        }
        c->name[f] = (const char *)PyUnicode_1BYTE_DATA(name);
        c->name_len[f] = PyUnicode_GET_LENGTH(name);
        char kind = c->kind[f] = kinds[f];
        if (kind != 's' && kind != 'f' && kind != 'i' && kind != 't') {
            PyErr_Format(PyExc_ValueError, "scan: unknown field kind %c", kind);
            return -1;
        }
        if (kind == 't' && (c->texts[f] = PyList_New(0)) == NULL)
            return -1;
        Py_buffer *v = &views[f];
        if (PyObject_GetBuffer(PyTuple_GET_ITEM(columns, f), v, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0)
            return -1;
        const char *want = kind == 's' ? "O" : kind == 'i' ? "l" : "d";
        int format_ok = v->format != NULL && (strcmp(v->format, want) == 0 || (kind == 'i' && strcmp(v->format, "q") == 0));
        if (v->itemsize != 8 || v->len < n * 8 || !format_ok) {
            PyErr_Format(PyExc_ValueError, "scan: column %zd must hold %zd items of format %s", f, n, want);
            return -1;
        }
        if (kind == 's')
            c->objs[f] = (PyObject **)v->buf;
        else if (kind == 'i')
            c->i64[f] = (int64_t *)v->buf;
        else
            c->f64[f] = (double *)v->buf;
    }
    return 0;
}

static PyObject *scan(PyObject *Py_UNUSED(self), PyObject *args) {
    PyObject *lines, *names, *columns, *okobj;
    const char *kinds;
    Py_ssize_t kinds_len, max_bytes;
    if (!PyArg_ParseTuple(args, "O!O!s#O!On", &PyList_Type, &lines, &PyTuple_Type, &names, &kinds, &kinds_len,
                          &PyTuple_Type, &columns, &okobj, &max_bytes))
        return NULL;
    Py_ssize_t nf = PyTuple_GET_SIZE(names), n = PyList_GET_SIZE(lines);
    if (nf < 1 || nf > MAX_FIELDS || kinds_len != nf || PyTuple_GET_SIZE(columns) != nf) {
        PyErr_Format(PyExc_ValueError, "scan: 1 to %d fields with one kind and one column each", MAX_FIELDS);
        return NULL;
    }
    Columns c;
    memset(&c, 0, sizeof c);
    Py_buffer views[MAX_FIELDS];
    memset(views, 0, sizeof views);
    Py_buffer okview = {0};
    PyObject *out = NULL;
    if (setup_columns(&c, names, kinds, columns, n, views) < 0)
        goto done;
    if (PyObject_GetBuffer(okobj, &okview, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0)
        goto done;
    if (okview.len < n) {
        PyErr_SetString(PyExc_ValueError, "scan: ok buffer shorter than lines");
        goto done;
    }
    if (scan_all(&c, lines, (uint8_t *)okview.buf, max_bytes) < 0)
        goto done;
    out = PyTuple_New(nf);
    if (out == NULL)
        goto done;
    for (Py_ssize_t f = 0; f < nf; f++) {
        PyObject *col = c.texts[f] != NULL ? c.texts[f] : Py_None;
        Py_INCREF(col);
        PyTuple_SET_ITEM(out, f, col);
    }
done:
    if (okview.obj != NULL)
        PyBuffer_Release(&okview);
    release(views, nf);
    for (Py_ssize_t f = 0; f < nf; f++) {
        Py_XDECREF(c.texts[f]);
        for (Py_ssize_t j = 0; j < c.intern[f].cap; j++)
            Py_XDECREF(c.intern[f].slots[j].str);
        PyMem_Free(c.intern[f].slots);
    }
    return out;
}

/* ---- string columns between workers (connectors.events.encode_column / decode_column) ---- */

typedef struct {
    char *buf;
    Py_ssize_t len, cap;
} Buffer;

static int buffer_put(Buffer *b, const char *p, Py_ssize_t n) {
    if (b->len + n > b->cap) {
        Py_ssize_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n)
            cap *= 2;
        char *grown = PyMem_Realloc(b->buf, (size_t)cap);
        if (grown == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        b->buf = grown;
        b->cap = cap;
    }
    memcpy(b->buf + b->len, p, (size_t)n);
    b->len += n;
    return 0;
}

/* Append s as UTF-8 (lone surrogates passed through, as "surrogatepass"). 1: done; 0: s holds
 * a NUL (the column is not for this encoding); -1: error. */
static int put_utf8(Buffer *b, PyObject *s) {
    if (PyUnicode_IS_ASCII(s)) {
        const char *p = (const char *)PyUnicode_1BYTE_DATA(s);
        Py_ssize_t n = PyUnicode_GET_LENGTH(s);
        if (memchr(p, 0, (size_t)n) != NULL)
            return 0;
        return buffer_put(b, p, n) < 0 ? -1 : 1;
    }
    PyObject *enc = PyUnicode_AsEncodedString(s, "utf-8", "surrogatepass");
    if (enc == NULL)
        return -1;
    const char *p = PyBytes_AS_STRING(enc);
    Py_ssize_t n = PyBytes_GET_SIZE(enc);
    int r = memchr(p, 0, (size_t)n) != NULL ? 0 : (buffer_put(b, p, n) < 0 ? -1 : 1);
    Py_DECREF(enc);
    return r;
}

/* Join strings[0:n] with NUL into b. 1: done; 0: a NUL inside a string; -1: error. */
static int join_utf8(Buffer *b, PyObject *const *strings, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++) {
        if (i && buffer_put(b, "", 1) < 0)
            return -1;
        int r = put_utf8(b, strings[i]);
        if (r <= 0)
            return r;
    }
    return 1;
}

/* Codes of values[0:n] by first appearance (int32), distinct values appended to `distinct`. */
static int code_values(PyObject *const *values, Py_ssize_t n, PyObject *distinct, int32_t *codes) {
    PyObject *index = PyDict_New();
    if (index == NULL)
        return -1;
    int ok = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *code = PyDict_GetItemWithError(index, values[i]);
        if (code == NULL) {
            if (PyErr_Occurred())
                goto done;
            Py_ssize_t next = PyList_GET_SIZE(distinct);
            if (next > INT32_MAX)
                goto too_many;
            code = PyLong_FromSsize_t(next);
            if (code == NULL || PyDict_SetItem(index, values[i], code) < 0 || PyList_Append(distinct, values[i]) < 0) {
                Py_XDECREF(code);
                goto done;
            }
            Py_DECREF(code);
        }
        codes[i] = (int32_t)PyLong_AsLong(code);
    }
    ok = 1;
    goto done;
too_many:
    PyErr_SetString(PyExc_ValueError, "encode_strings: more than 2**31 distinct strings");
done:
    Py_DECREF(index);
    return ok ? 0 : -1;
}

static PyObject *bytes_of(Buffer *b) { return PyBytes_FromStringAndSize(b->buf ? b->buf : "", b->len); }

/* encode_strings(column, probe): encode_column of an object column of str, as ("text", [joined])
 * or ("codes", [joined distinct, int32 codes]) by the same rule (fewer than half of the first
 * `probe` values distinct: codes); None if a value is not a str or holds a NUL (Python's path
 * then decides). */
static PyObject *encode_strings(PyObject *Py_UNUSED(self), PyObject *args) {
    PyObject *column;
    Py_ssize_t probe;
    if (!PyArg_ParseTuple(args, "On", &column, &probe))
        return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(column, &view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0)
        return NULL;
    PyObject *out = NULL, *distinct = NULL, *seen = NULL;
    Buffer text = {0};
    int32_t *codes = NULL;
    if (view.format == NULL || strcmp(view.format, "O") != 0 || view.itemsize != (Py_ssize_t)sizeof(PyObject *)) {
        PyErr_SetString(PyExc_ValueError, "encode_strings: expected a contiguous object array");
        goto done;
    }
    PyObject *const *values = (PyObject *const *)view.buf;
    Py_ssize_t n = view.len / view.itemsize;
    if (n == 0) { /* Python's rule pickles an empty column */
        out = Py_None;
        Py_INCREF(out);
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        if (!PyUnicode_CheckExact(values[i])) {
            out = Py_None;
            Py_INCREF(out);
            goto done;
        }
    }
    Py_ssize_t first = n < probe ? n : probe;
    if ((seen = PySet_New(NULL)) == NULL)
        goto done;
    for (Py_ssize_t i = 0; i < first; i++)
        if (PySet_Add(seen, values[i]) < 0)
            goto done;
    int r;
    if (2 * PySet_GET_SIZE(seen) <= first) {
        if ((distinct = PyList_New(0)) == NULL || (codes = PyMem_Malloc((size_t)(n ? n : 1) * sizeof(int32_t))) == NULL)
            goto done;
        if (code_values(values, n, distinct, codes) < 0)
            goto done;
        r = join_utf8(&text, ((PyListObject *)distinct)->ob_item, PyList_GET_SIZE(distinct));
        if (r == 1) {
            out = Py_BuildValue("(s[NN])", "codes", bytes_of(&text),
                                PyBytes_FromStringAndSize((const char *)codes, n * (Py_ssize_t)sizeof(int32_t)));
            goto done;
        }
    } else {
        r = join_utf8(&text, values, n);
        if (r == 1) {
            out = Py_BuildValue("(s[N])", "text", bytes_of(&text));
            goto done;
        }
    }
    if (r == 0) {
        out = Py_None;
        Py_INCREF(out);
    }
done:
    PyBuffer_Release(&view);
    Py_XDECREF(distinct);
    Py_XDECREF(seen);
    PyMem_Free(text.buf);
    PyMem_Free(codes);
    return out;
}

/* decode_text(blob, out): the n = len(out) NUL-separated UTF-8 strings of blob into the object
 * array out (surrogatepass, as encode_strings wrote them). */
static PyObject *decode_text(PyObject *Py_UNUSED(self), PyObject *args) {
    Py_buffer blob, view;
    PyObject *column;
    if (!PyArg_ParseTuple(args, "y*O", &blob, &column))
        return NULL;
    if (PyObject_GetBuffer(column, &view, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) {
        PyBuffer_Release(&blob);
        return NULL;
    }
    PyObject *result = NULL;
    if (view.format == NULL || strcmp(view.format, "O") != 0 || view.itemsize != (Py_ssize_t)sizeof(PyObject *)) {
        PyErr_SetString(PyExc_ValueError, "decode_text: expected a writable contiguous object array");
        goto done;
    }
    PyObject **out = (PyObject **)view.buf;
    Py_ssize_t n = view.len / view.itemsize, i = 0;
    const char *p = (const char *)blob.buf, *end = p + blob.len;
    int at_end = n == 0 && blob.len == 0;
    while (i < n) {
        const char *stop = memchr(p, 0, (size_t)(end - p));
        if (stop == NULL)
            stop = end;
        Py_ssize_t len = stop - p;
        int ascii = 1;
        for (Py_ssize_t k = 0; k < len && ascii; k++)
            ascii = (unsigned char)p[k] < 0x80;
        PyObject *s = ascii ? new_ascii(p, len) : PyUnicode_DecodeUTF8(p, len, "surrogatepass");
        if (s == NULL)
            goto done;
        PyObject *old = out[i];
        out[i++] = s;
        Py_XDECREF(old);
        if (stop == end) {
            at_end = 1;
            break;
        }
        p = stop + 1;
    }
    if (i != n || !at_end) {
        PyErr_Format(PyExc_ValueError, "decode_text: the text holds a different number of strings than %zd", n);
        goto done;
    }
    result = Py_None;
    Py_INCREF(result);
done:
    PyBuffer_Release(&view);
    PyBuffer_Release(&blob);
    return result;
}

static PyMethodDef methods[] = {
    {"scan", scan, METH_VARARGS,
     "scan(lines, names, kinds, columns, ok, max_bytes): JSON Lines fast path into columns."},
    {"encode_strings", encode_strings, METH_VARARGS, "encode_strings(column, probe): a str column as text or codes."},
    {"decode_text", decode_text, METH_VARARGS, "decode_text(blob, out): NUL-separated UTF-8 strings into out."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_cjsonl", "JSON Lines fast path.", -1, methods};

PyMODINIT_FUNC PyInit__cjsonl(void) { return PyModule_Create(&module); }
