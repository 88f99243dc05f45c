/* Batch hashing of Python items for sketchwatch.
 *
 * str and bytes-like items: the low 64 bits of MurmurHash3_x64_128 of their
 * UTF-8 bytes (equal to ``mmh3.hash128(item, seed) & (2**64 - 1)``).
 * int items: two rounds of the MurmurHash3 64-bit finaliser keyed by the seed,
 * equal to the numpy path in ``sketches/hashing.py``.
 * The module holds no state between calls; results depend only on (item, seed).
 *
 * bloom_probe: Bloom filter probes of pre-hashed items, one item after another, with the
 * probe positions of ``sketches.hashing.probe_indices`` for m <= 2**32 (double hashing of
 * the two 32-bit halves, Lemire's multiply-shift reduction). Sequential by construction, so
 * an item repeated within a batch is found at its second occurrence.
 *
 * cms_add, cms_min: a Count-Min sketch's plain update and estimates, with the same probes.
 *
 * dgim_add: DGIMTable.add event by event (exactly the numpy rounds' result, at ~ns per event).
 *
 * mix_into: the 64-bit finaliser or the int hash over a uint64 array in one pass.
 * small_codes: codes of a column of few distinct strings, by address then equality.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define C1 0x87c37b91114253d5ULL
#define C2 0x4cf5ad432745937fULL
#define GOLDEN 0x9e3779b97f4a7c15ULL

static inline uint64_t rotl64(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

static inline uint64_t fmix64(uint64_t k) {
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    k *= 0xc4ceb9fe1a85ec53ULL;
    k ^= k >> 33;
    return k;
}

static inline uint64_t load64(const uint8_t *p) {
    uint64_t v;
    memcpy(&v, p, 8); /* little-endian hosts only; checked at import */
    return v;
}

static uint64_t murmur3_x64_128_low(const uint8_t *data, Py_ssize_t len, uint32_t seed) {
    const Py_ssize_t nblocks = len / 16;
    uint64_t h1 = seed, h2 = seed;
    for (Py_ssize_t i = 0; i < nblocks; i++) {
        uint64_t k1 = load64(data + 16 * i);
        uint64_t k2 = load64(data + 16 * i + 8);
        k1 *= C1; k1 = rotl64(k1, 31); k1 *= C2; h1 ^= k1;
        h1 = rotl64(h1, 27); h1 += h2; h1 = h1 * 5 + 0x52dce729;
        k2 *= C2; k2 = rotl64(k2, 33); k2 *= C1; h2 ^= k2;
        h2 = rotl64(h2, 31); h2 += h1; h2 = h2 * 5 + 0x38495ab5;
    }
    const uint8_t *tail = data + nblocks * 16;
    uint64_t k1 = 0, k2 = 0;
    switch (len & 15) {
    case 15: k2 ^= (uint64_t)tail[14] << 48; /* fall through */
    case 14: k2 ^= (uint64_t)tail[13] << 40; /* fall through */
    case 13: k2 ^= (uint64_t)tail[12] << 32; /* fall through */
    case 12: k2 ^= (uint64_t)tail[11] << 24; /* fall through */
    case 11: k2 ^= (uint64_t)tail[10] << 16; /* fall through */
    case 10: k2 ^= (uint64_t)tail[9] << 8;   /* fall through */
    case 9:
        k2 ^= (uint64_t)tail[8];
        k2 *= C2; k2 = rotl64(k2, 33); k2 *= C1; h2 ^= k2;
        /* fall through */
    case 8: k1 ^= (uint64_t)tail[7] << 56; /* fall through */
    case 7: k1 ^= (uint64_t)tail[6] << 48; /* fall through */
    case 6: k1 ^= (uint64_t)tail[5] << 40; /* fall through */
    case 5: k1 ^= (uint64_t)tail[4] << 32; /* fall through */
    case 4: k1 ^= (uint64_t)tail[3] << 24; /* fall through */
    case 3: k1 ^= (uint64_t)tail[2] << 16; /* fall through */
    case 2: k1 ^= (uint64_t)tail[1] << 8;  /* fall through */
    case 1:
        k1 ^= (uint64_t)tail[0];
        k1 *= C1; k1 = rotl64(k1, 31); k1 *= C2; h1 ^= k1;
    }
    h1 ^= (uint64_t)len; h2 ^= (uint64_t)len;
    h1 += h2; h2 += h1;
    h1 = fmix64(h1); h2 = fmix64(h2);
    return h1 + h2;
}

#define SEEN_SLOTS 64

/* A value per object seen last, by address (direct-mapped): a column of few distinct values
   holds the same few objects over and over (parsers intern them), and looking one up costs a
   few ns where hashing or comparing it costs ~10. Valid within one call over an array that
   keeps every object alive, so that an address names one object throughout. */
typedef struct {
    PyObject *obj[SEEN_SLOTS];
    uint64_t value[SEEN_SLOTS];
} Seen;

/* The slot of an object (objects are 16-byte aligned). */
static inline size_t seen_slot(PyObject *item) {
    uintptr_t a = (uintptr_t)item >> 4;
    return (size_t)((a ^ (a >> 6) ^ (a >> 12)) & (SEEN_SLOTS - 1));
}

static inline int seen_get(const Seen *seen, PyObject *item, uint64_t *value) {
    size_t slot = seen_slot(item);
    if (seen->obj[slot] != item) return 0;
    *value = seen->value[slot];
    return 1;
}

static inline void seen_put(Seen *seen, PyObject *item, uint64_t value) {
    size_t slot = seen_slot(item);
    seen->obj[slot] = item;
    seen->value[slot] = value;
}

static inline uint64_t int_key(uint32_t seed) { return fmix64((uint64_t)seed + GOLDEN); }

static inline uint64_t mix_int(uint64_t v, uint64_t key) { return fmix64(fmix64(v ^ key) + key); }

/* Hash one item; returns 0 on success, -1 with a Python error set. */
static int hash_one(PyObject *item, uint32_t seed, uint64_t key, uint64_t *out) {
    if (PyUnicode_Check(item)) {
        Py_ssize_t n;
        const char *s = PyUnicode_AsUTF8AndSize(item, &n);
        if (s == NULL) return -1;
        *out = murmur3_x64_128_low((const uint8_t *)s, n, seed);
        return 0;
    }
    if (PyBytes_Check(item)) {
        *out = murmur3_x64_128_low((const uint8_t *)PyBytes_AS_STRING(item), PyBytes_GET_SIZE(item), seed);
        return 0;
    }
    if (PyLong_Check(item) || PyIndex_Check(item)) {
        PyObject *num = PyNumber_Index(item);
        if (num == NULL) return -1;
        int overflow = 0;
        long long v = PyLong_AsLongLongAndOverflow(num, &overflow);
        uint64_t u;
        if (overflow == 0) {
            if (v == -1 && PyErr_Occurred()) { Py_DECREF(num); return -1; }
            u = (uint64_t)v;
        } else if (overflow > 0) {
            u = PyLong_AsUnsignedLongLong(num);
            if (u == (uint64_t)-1 && PyErr_Occurred()) {
                Py_DECREF(num);
                PyErr_SetString(PyExc_ValueError, "integer item out of range: items must fit in int64 or uint64");
                return -1;
            }
        } else {
            Py_DECREF(num);
            PyErr_SetString(PyExc_ValueError, "integer item out of range: items must fit in int64 or uint64");
            return -1;
        }
        Py_DECREF(num);
        *out = mix_int(u, key);
        return 0;
    }
    if (PyObject_CheckBuffer(item)) {
        Py_buffer view;
        if (PyObject_GetBuffer(item, &view, PyBUF_SIMPLE) < 0) return -1;
        *out = murmur3_x64_128_low((const uint8_t *)view.buf, view.len, seed);
        PyBuffer_Release(&view);
        return 0;
    }
    PyErr_Format(PyExc_TypeError, "cannot hash item of type %.100s: expected str, bytes or int",
                 Py_TYPE(item)->tp_name);
    return -1;
}

/* hash_into(items, seed, out): hash a sequence of items into a writable uint64 buffer. */
static PyObject *hash_into(PyObject *self, PyObject *args) {
    PyObject *items;
    unsigned long long seed_arg;
    Py_buffer out;
    if (!PyArg_ParseTuple(args, "OKw*", &items, &seed_arg, &out)) return NULL;
    if (seed_arg > 0xffffffffULL) {
        PyBuffer_Release(&out);
        PyErr_SetString(PyExc_ValueError, "seed must be in [0, 2**32)");
        return NULL;
    }
    uint32_t seed = (uint32_t)seed_arg;
    PyObject *seq = PySequence_Fast(items, "items must be a sequence");
    if (seq == NULL) { PyBuffer_Release(&out); return NULL; }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if (out.len < (Py_ssize_t)(n * sizeof(uint64_t))) {
        Py_DECREF(seq); PyBuffer_Release(&out);
        PyErr_SetString(PyExc_ValueError, "output buffer is smaller than the number of items");
        return NULL;
    }
    uint64_t *dst = (uint64_t *)out.buf;
    PyObject **elems = PySequence_Fast_ITEMS(seq);
    uint64_t key = int_key(seed);
    for (Py_ssize_t i = 0; i < n; i++) {
        if (hash_one(elems[i], seed, key, &dst[i]) < 0) {
            Py_DECREF(seq); PyBuffer_Release(&out);
            return NULL;
        }
    }
    Py_DECREF(seq);
    PyBuffer_Release(&out);
    Py_RETURN_NONE;
}

/* hash_array_into(address, n, seed, out): hash the n objects of a C-contiguous numpy object
   array whose data starts at address (the caller keeps the array alive and checks its layout),
   without the list that a sequence would need first. */
static PyObject *hash_array_into(PyObject *self, PyObject *args) {
    unsigned long long address, seed_arg;
    Py_ssize_t n;
    Py_buffer out;
    if (!PyArg_ParseTuple(args, "KnKw*", &address, &n, &seed_arg, &out)) return NULL;
    if (seed_arg > 0xffffffffULL || n < 0 || out.len < (Py_ssize_t)(n * sizeof(uint64_t))) {
        PyBuffer_Release(&out);
        PyErr_SetString(PyExc_ValueError, "hash_array_into: seed not in [0, 2**32) or output too small");
        return NULL;
    }
    uint32_t seed = (uint32_t)seed_arg;
    uint64_t key = int_key(seed);
    PyObject **elems = (PyObject **)(uintptr_t)address;
    uint64_t *dst = (uint64_t *)out.buf;
    Seen seen = {{NULL}, {0}};  /* the hashes of the strings seen last */
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = elems[i];
        if (seen_get(&seen, item, &dst[i])) continue;
        if (hash_one(item, seed, key, &dst[i]) < 0) {
            PyBuffer_Release(&out);
            return NULL;
        }
        if (PyUnicode_CheckExact(item)) {
            seen_put(&seen, item, dst[i]);
        } else if (!PyBytes_CheckExact(item) && !PyLong_CheckExact(item)) {
            /* hashing it may have run Python code (__index__) that replaced array items:
               a cached address may now be another object's */
            memset(seen.obj, 0, sizeof seen.obj);
        }
    }
    PyBuffer_Release(&out);
    Py_RETURN_NONE;
}

/* mix_into(values, key, rounds): in the writable uint64 buffer values, each v becomes
   fmix64(v) (rounds 1) or the int hash fmix64(fmix64(v ^ key) + key) (rounds 2): one pass
   instead of numpy's dozen. */
static PyObject *mix_into(PyObject *self, PyObject *args) {
    Py_buffer values;
    unsigned long long key;
    int rounds;
    if (!PyArg_ParseTuple(args, "w*Ki", &values, &key, &rounds)) return NULL;
    if ((rounds != 1 && rounds != 2) || values.len % (Py_ssize_t)sizeof(uint64_t) != 0) {
        PyBuffer_Release(&values);
        PyErr_SetString(PyExc_ValueError, "mix_into: rounds must be 1 or 2, values a uint64 buffer");
        return NULL;
    }
    uint64_t *v = (uint64_t *)values.buf;
    Py_ssize_t n = values.len / (Py_ssize_t)sizeof(uint64_t);
    if (rounds == 1) {
        for (Py_ssize_t i = 0; i < n; i++) v[i] = fmix64(v[i]);
    } else {
        for (Py_ssize_t i = 0; i < n; i++) v[i] = mix_int(v[i], key);
    }
    PyBuffer_Release(&values);
    Py_RETURN_NONE;
}

/* small_codes(address, n, limit, out): number the n objects of a C-contiguous numpy object
   array (as hash_array_into) by equality, 0, 1, ... in order of first appearance, into the
   int64 buffer out; returns how many distinct values there are, or -1 (out undefined) when
   there are more than limit or a value is not exactly a str (other types may define equality
   as they like). Equal strings are usually the same object, found by address; a new object
   is compared with each distinct value so far. */
static PyObject *small_codes(PyObject *self, PyObject *args) {
    unsigned long long address;
    Py_ssize_t n, limit;
    Py_buffer out;
    if (!PyArg_ParseTuple(args, "Knnw*", &address, &n, &limit, &out)) return NULL;
    if (n < 0 || limit < 0 || limit > SEEN_SLOTS || out.len < (Py_ssize_t)(n * sizeof(int64_t))) {
        PyBuffer_Release(&out);
        PyErr_SetString(PyExc_ValueError, "small_codes: n or limit out of range, or output too small");
        return NULL;
    }
    PyObject **elems = (PyObject **)(uintptr_t)address;
    int64_t *dst = (int64_t *)out.buf;
    PyObject *distinct[SEEN_SLOTS];
    Py_ssize_t count = 0;
    Seen seen = {{NULL}, {0}};  /* the codes of the strings seen last */
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = elems[i];
        uint64_t cached;
        if (seen_get(&seen, item, &cached)) {
            dst[i] = (int64_t)cached;
            continue;
        }
        if (!PyUnicode_CheckExact(item)) goto give_up;
        Py_ssize_t code = 0;
        while (code < count) {
            int eq = PyObject_RichCompareBool(item, distinct[code], Py_EQ);
            if (eq < 0) { PyBuffer_Release(&out); return NULL; }
            if (eq) break;
            code++;
        }
        if (code == count) {
            if (count == limit) goto give_up;
            distinct[count++] = item;
        }
        dst[i] = code;
        seen_put(&seen, item, (uint64_t)code);
    }
    PyBuffer_Release(&out);
    return PyLong_FromSsize_t(count);
give_up:
    PyBuffer_Release(&out);
    return PyLong_FromLong(-1);
}

/* run_cumsum(x, rows, first, out, exclusive): per row of the C-contiguous float64 matrix x
   (rows x n), the running sum within runs (first[i]: index where i's run starts), added left
   to right; exclusive: of the earlier elements only (0 at a run's start). */
static PyObject *run_cumsum(PyObject *self, PyObject *args) {
    Py_buffer x, first, out;
    Py_ssize_t rows;
    int exclusive;
    if (!PyArg_ParseTuple(args, "y*ny*w*p", &x, &rows, &first, &out, &exclusive)) return NULL;
    Py_ssize_t n = first.len / (Py_ssize_t)sizeof(Py_ssize_t);
    int ok = rows >= 0 && x.len == rows * n * (Py_ssize_t)sizeof(double) && out.len == x.len;
    const Py_ssize_t *f = (const Py_ssize_t *)first.buf;
    for (Py_ssize_t i = 0; ok && i < n; i++) ok = f[i] >= 0 && f[i] <= i;
    if (!ok) {
        PyBuffer_Release(&x); PyBuffer_Release(&first); PyBuffer_Release(&out);
        PyErr_SetString(PyExc_ValueError, "run_cumsum: x must be rows x n float64, first n run starts <= index");
        return NULL;
    }
    const double *src = (const double *)x.buf;
    double *dst = (double *)out.buf;
    for (Py_ssize_t r = 0; r < rows; r++) {
        const double *a = src + r * n;
        double *b = dst + r * n;
        double acc = 0.0;
        if (exclusive) {
            for (Py_ssize_t i = 0; i < n; i++) {
                if (f[i] == i) acc = 0.0;
                b[i] = acc;
                acc += a[i];
            }
        } else {
            for (Py_ssize_t i = 0; i < n; i++) {
                acc = (f[i] == i) ? a[i] : acc + a[i];
                b[i] = acc;
            }
        }
    }
    PyBuffer_Release(&x); PyBuffer_Release(&first); PyBuffer_Release(&out);
    Py_RETURN_NONE;
}

/* hash_one(item, seed) -> int */
static PyObject *py_hash_one(PyObject *self, PyObject *args) {
    PyObject *item;
    unsigned long long seed_arg;
    if (!PyArg_ParseTuple(args, "OK", &item, &seed_arg)) return NULL;
    if (seed_arg > 0xffffffffULL) {
        PyErr_SetString(PyExc_ValueError, "seed must be in [0, 2**32)");
        return NULL;
    }
    uint64_t h;
    if (hash_one(item, (uint32_t)seed_arg, int_key((uint32_t)seed_arg), &h) < 0) return NULL;
    return PyLong_FromUnsignedLongLong(h);
}

/* Probe positions of hashing.probe_indices for m <= 2**32: ((a + i*b) mod 2**32) * m >> 32, with a
 * the low and b the high half of the hash (b odd); probe_at is the multiply-shift reduction. */
static inline uint64_t probe_at(uint32_t a, uint64_t m) { return ((uint64_t)a * m) >> 32; }

static inline int all_bits_set(const uint64_t *words, uint64_t h, unsigned k, uint64_t m) {
    uint32_t a = (uint32_t)h, b = (uint32_t)(h >> 32) | 1u;
    for (unsigned i = 0; i < k; i++, a += b) {
        uint64_t pos = probe_at(a, m);
        if (!((words[pos >> 6] >> (pos & 63)) & 1u)) return 0;
    }
    return 1;
}

static inline void set_bits(uint64_t *words, uint64_t h, unsigned k, uint64_t m) {
    uint32_t a = (uint32_t)h, b = (uint32_t)(h >> 32) | 1u;
    for (unsigned i = 0; i < k; i++, a += b) {
        uint64_t pos = probe_at(a, m);
        words[pos >> 6] |= 1ULL << (pos & 63);
    }
}

enum { PROBE_TEST = 0, PROBE_SET = 1, PROBE_CHECK_AND_SET = 2 };

/* bloom_probe(hashes, k, m, words, prev, out, mode): per item in order, out[i] = all k bits
 * set in ``words`` (or, if ``prev`` is not None, all set in ``prev``), tested before the item's
 * own bits are set; mode 0 tests only, 1 sets only (out untouched), 2 tests then sets. */
static PyObject *bloom_probe(PyObject *self, PyObject *args) {
    Py_buffer hashes, words, out, prev = {0};
    PyObject *prev_obj;
    unsigned int k;
    unsigned long long m;
    int mode;
    if (!PyArg_ParseTuple(args, "y*IKw*Ow*i", &hashes, &k, &m, &words, &prev_obj, &out, &mode)) return NULL;
    PyObject *result = NULL;
    int have_prev = prev_obj != Py_None;
    if (have_prev && PyObject_GetBuffer(prev_obj, &prev, PyBUF_SIMPLE) < 0) goto done;
    Py_ssize_t n = hashes.len / (Py_ssize_t)sizeof(uint64_t);
    uint64_t nbits = (uint64_t)words.len * 8;
    if (m == 0 || m > 0x100000000ULL || m > nbits || (have_prev && (uint64_t)prev.len * 8 < m)) {
        PyErr_SetString(PyExc_ValueError, "m must be in [1, 2**32] and fit in the word buffers");
        goto done;
    }
    if (mode < PROBE_TEST || mode > PROBE_CHECK_AND_SET || (mode != PROBE_SET && out.len < n)) {
        PyErr_SetString(PyExc_ValueError, "bad mode or output buffer shorter than the hashes");
        goto done;
    }
    const uint64_t *h = (const uint64_t *)hashes.buf;
    uint64_t *w = (uint64_t *)words.buf;
    const uint64_t *pw = have_prev ? (const uint64_t *)prev.buf : NULL;
    uint8_t *o = (uint8_t *)out.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        if (mode != PROBE_SET) o[i] = (uint8_t)(all_bits_set(w, h[i], k, m) || (pw && all_bits_set(pw, h[i], k, m)));
        if (mode != PROBE_TEST) set_bits(w, h[i], k, m);
    }
    Py_END_ALLOW_THREADS
    result = Py_None;
    Py_INCREF(result);
done:
    if (prev.obj != NULL) PyBuffer_Release(&prev);
    PyBuffer_Release(&hashes);
    PyBuffer_Release(&words);
    PyBuffer_Release(&out);
    return result;
}

/* cms_add(hashes, k, m, counters, weights): a Count-Min sketch's plain update, row i of item j at
 * counters[i * m + probe_i(hashes[j])] += weights[j] (1 when weights is None); the probes are
 * those of hashing.probe_indices for m <= 2**32. The caller keeps the total (overflow checks). */
static PyObject *cms_add(PyObject *self, PyObject *args) {
    Py_buffer hashes, counters, weights = {0};
    PyObject *weights_obj;
    unsigned int k;
    unsigned long long m;
    if (!PyArg_ParseTuple(args, "y*IKw*O", &hashes, &k, &m, &counters, &weights_obj)) return NULL;
    PyObject *result = NULL;
    int have_weights = weights_obj != Py_None;
    if (have_weights && PyObject_GetBuffer(weights_obj, &weights, PyBUF_SIMPLE) < 0) goto done;
    Py_ssize_t n = hashes.len / (Py_ssize_t)sizeof(uint64_t);
    if (m == 0 || m > 0x100000000ULL || (uint64_t)counters.len != (uint64_t)k * m * sizeof(int64_t) ||
        (have_weights && weights.len != n * (Py_ssize_t)sizeof(int64_t))) {
        PyErr_SetString(PyExc_ValueError, "cms_add: m must be in [1, 2**32], counters k * m int64, one weight per hash");
        goto done;
    }
    const uint64_t *h = (const uint64_t *)hashes.buf;
    const int64_t *w = have_weights ? (const int64_t *)weights.buf : NULL;
    int64_t *c = (int64_t *)counters.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t j = 0; j < n; j++) {
        uint32_t a = (uint32_t)h[j], b = (uint32_t)(h[j] >> 32) | 1u;
        int64_t add = w ? w[j] : 1;
        int64_t *row = c;
        for (unsigned i = 0; i < k; i++, a += b, row += m) row[probe_at(a, m)] += add;
    }
    Py_END_ALLOW_THREADS
    result = Py_None;
    Py_INCREF(result);
done:
    if (weights.obj != NULL) PyBuffer_Release(&weights);
    PyBuffer_Release(&hashes);
    PyBuffer_Release(&counters);
    return result;
}

/* cms_min(hashes, k, m, counters, out): out[j] = the least of item j's k counters (the estimate). */
static PyObject *cms_min(PyObject *self, PyObject *args) {
    Py_buffer hashes, counters, out;
    unsigned int k;
    unsigned long long m;
    if (!PyArg_ParseTuple(args, "y*IKy*w*", &hashes, &k, &m, &counters, &out)) return NULL;
    PyObject *result = NULL;
    Py_ssize_t n = hashes.len / (Py_ssize_t)sizeof(uint64_t);
    if (k == 0 || m == 0 || m > 0x100000000ULL || (uint64_t)counters.len != (uint64_t)k * m * sizeof(int64_t) ||
        out.len != n * (Py_ssize_t)sizeof(int64_t)) {
        PyErr_SetString(PyExc_ValueError, "cms_min: k >= 1, m in [1, 2**32], counters k * m int64, one output per hash");
        goto done;
    }
    const uint64_t *h = (const uint64_t *)hashes.buf;
    const int64_t *c = (const int64_t *)counters.buf;
    int64_t *o = (int64_t *)out.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t j = 0; j < n; j++) {
        uint32_t a = (uint32_t)h[j], b = (uint32_t)(h[j] >> 32) | 1u;
        int64_t least = INT64_MAX; /* k >= 1: always replaced by a counter */
        const int64_t *row = c;
        for (unsigned i = 0; i < k; i++, a += b, row += m) {
            int64_t v = row[probe_at(a, m)];
            if (v < least) least = v;
        }
        o[j] = least;
    }
    Py_END_ALLOW_THREADS
    result = Py_None;
    Py_INCREF(result);
done:
    PyBuffer_Release(&hashes);
    PyBuffer_Release(&counters);
    PyBuffer_Release(&out);
    return result;
}

static inline uint64_t highest_bit(uint64_t x) { return x ? 1ULL << (63 - __builtin_clzll(x)) : 0; }

/* dgim_add(masks, rows, bits, reset, window, r, estimate, lo, hi): DGIMTable.add, one event after
 * another (sketches/dgim_table.py has the representation). Per event: empty the row if reset, age
 * every bucket by one (buckets leaving the window drop out of the mask), and for a 1-bit add a
 * bucket of size 1, merging the two oldest buckets of a size while there are more than r, then
 * write count (total - top / 2) and the exact bounds. Outputs of 0-bits are left untouched. */
static PyObject *dgim_add(PyObject *self, PyObject *args) {
    Py_buffer masks, rows, bits, est, lo, hi, reset = {0};
    PyObject *reset_obj;
    unsigned int window, r;
    if (!PyArg_ParseTuple(args, "w*y*y*OIIw*w*w*", &masks, &rows, &bits, &reset_obj, &window, &r, &est, &lo, &hi))
        return NULL;
    PyObject *result = NULL;
    int have_reset = reset_obj != Py_None;
    if (have_reset && PyObject_GetBuffer(reset_obj, &reset, PyBUF_SIMPLE) < 0) goto done;
    Py_ssize_t n = bits.len;
    unsigned levels = 0;
    while ((window >> levels) != 0) levels++; /* window.bit_length() */
    Py_ssize_t nrows = masks.len / (Py_ssize_t)(8 * (levels ? levels : 1));
    if (window < 1 || window > 64 || r < 2 || rows.len != n * (Py_ssize_t)sizeof(Py_ssize_t) ||
        (have_reset && reset.len != n) || est.len < n * 8 || lo.len < n * 8 || hi.len < n * 8 ||
        masks.len != nrows * (Py_ssize_t)(8 * levels)) {
        PyErr_SetString(PyExc_ValueError, "dgim_add: inconsistent shapes or parameters");
        goto done;
    }
    const Py_ssize_t *row = (const Py_ssize_t *)rows.buf;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (row[i] < 0 || row[i] >= nrows) {
            PyErr_Format(PyExc_ValueError, "rows must be in [0, %zd)", nrows);
            goto done;
        }
    }
    uint64_t *all = (uint64_t *)masks.buf;
    const uint8_t *bit = (const uint8_t *)bits.buf, *rst = have_reset ? (const uint8_t *)reset.buf : NULL;
    int64_t *e = (int64_t *)est.buf, *l = (int64_t *)lo.buf, *h = (int64_t *)hi.buf;
    const uint64_t full = window == 64 ? ~0ULL : (1ULL << window) - 1;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        uint64_t *m = all + row[i] * (Py_ssize_t)levels;
        if (rst && rst[i]) memset(m, 0, levels * sizeof(uint64_t));
        for (unsigned j = 0; j < levels; j++) m[j] = (m[j] << 1) & full;
        if (!bit[i]) continue;
        m[0] |= 1;
        for (unsigned j = 0; j + 1 < levels && (unsigned)__builtin_popcountll(m[j]) > r; j++) {
            uint64_t level = m[j] ^ highest_bit(m[j]); /* drop the oldest bucket */
            uint64_t carry = highest_bit(level);        /* the next oldest doubles */
            m[j] = level ^ carry;
            m[j + 1] |= carry;
        }
        int64_t total = 0, top = 0;
        for (unsigned j = 0; j < levels; j++) {
            total += (int64_t)__builtin_popcountll(m[j]) << j;
            if (m[j]) top = (int64_t)1 << j;
        }
        e[i] = total - top / 2;
        l[i] = total - top + 1;
        h[i] = total;
    }
    Py_END_ALLOW_THREADS
    result = Py_None;
    Py_INCREF(result);
done:
    if (have_reset && reset.obj != NULL) PyBuffer_Release(&reset);
    PyBuffer_Release(&masks);
    PyBuffer_Release(&rows);
    PyBuffer_Release(&bits);
    PyBuffer_Release(&est);
    PyBuffer_Release(&lo);
    PyBuffer_Release(&hi);
    return result;
}

static PyMethodDef methods[] = {
    {"hash_into", hash_into, METH_VARARGS, "hash_into(items, seed, out): hash a sequence into a uint64 buffer."},
    {"hash_array_into", hash_array_into, METH_VARARGS, "hash_array_into(address, n, seed, out): hash an object array."},
    {"mix_into", mix_into, METH_VARARGS, "mix_into(values, key, rounds): fmix64 or the int hash, in place."},
    {"small_codes", small_codes, METH_VARARGS, "small_codes(address, n, limit, out): codes of few distinct strs."},
    {"hash_one", py_hash_one, METH_VARARGS, "hash_one(item, seed) -> int: hash one item."},
    {"run_cumsum", run_cumsum, METH_VARARGS, "run_cumsum(x, rows, first, out, exclusive): prefix sums within runs."},
    {"bloom_probe", bloom_probe, METH_VARARGS, "bloom_probe(hashes, k, m, words, prev, out, mode): Bloom probes."},
    {"cms_add", cms_add, METH_VARARGS, "cms_add(hashes, k, m, counters, weights): Count-Min plain update."},
    {"cms_min", cms_min, METH_VARARGS, "cms_min(hashes, k, m, counters, out): Count-Min estimates."},
    {"dgim_add", dgim_add, METH_VARARGS, "dgim_add(masks, rows, bits, reset, window, r, est, lo, hi): DGIMTable.add."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_chash", "Batch item hashing.", -1, methods};

PyMODINIT_FUNC PyInit__chash(void) {
    const uint16_t probe = 1;
    if (*(const uint8_t *)&probe != 1) {
        PyErr_SetString(PyExc_ImportError, "sketches._chash supports little-endian hosts only");
        return NULL;
    }
    return PyModule_Create(&module);
}
