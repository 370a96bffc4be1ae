/* Fast path of normalise/x12_835.py, mapping x12_835/2: a remittance's claim events in C.
 *
 * The Python builder (x12_835._claim_bodies and _Builder.event) is the reference: for every
 * claim this builds the very Event it builds (same id, keys, data with its keys in the same
 * order, same source), in one call per remittance.  It reads the parsed model through the
 * slots of the classes given to ``configure`` and declines (returns None) whenever a value
 * is not of the type the model declares in a way that could change the result (a status
 * that is not exactly a str, a date that is not exactly a date, ...): the caller then runs
 * the reference, so odd input still gets the reference's events or error.
 *
 * Events and source refs are created with their class's own allocator and their slots filled
 * directly (offsets read from the member descriptors by ``configure``); the classes have no
 * __post_init__, so this is what their __init__ would store.
 *
 * Where the time went, and what each section below does about it (bench_x12_parse.py): the
 * dicts (a PyDict_SetItem per value: "dicts"), the text of every amount ("amounts") and the
 * cyclic GC scanning the events of a remittance while its later claims were built ("garbage
 * collection").  Both "dicts" and "amounts" read CPython's private layouts, checked before
 * use, and configure(direct=False) turns them off (the tests compare both ways).
 *
 * Memory safety: model values are borrowed from the claims tuple (kept alive by the caller);
 * every new reference is either stored in a new object or released on every path; a slot
 * that is not set, or an object of another class, declines.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <datetime.h>
#include <stdint.h>
#include <string.h>
#include <structmember.h>

#include "../_native/slot_shapes.h"

#define DATE_CACHE_BITS 8

/* -- classes ----------------------------------------------------------------------------- */

enum { ADJUSTMENT, SERVICE_LINE, CLAIM_PAYMENT, EVENT, SOURCE_REF, SHAPES };

/* Read shapes list the fields used, in the order of the enums below. */
enum { A_GROUP, A_REASON, A_AMOUNT, A_QUANTITY, A_SEGMENT };
enum { L_PROCEDURE, L_CHARGE, L_PAID, L_REVENUE, L_CONTROL, L_DATE, L_ADJUSTMENTS, L_SEGMENT };
enum {
    C_PCN, C_STATUS, C_CHARGE, C_PAID, C_RESPONSIBILITY, C_FILING, C_PAYER_CLAIM, C_FACILITY,
    C_FREQUENCY, C_ORIGINAL, C_FROM, C_TO, C_ADJUSTMENTS, C_LINES, C_SEGMENT
};

static Shape shapes[SHAPES] = {
    {"Adjustment", 5, 0, {"group", "reason", "amount", "quantity", "segment_number"}, NULL, {0}},
    {"ServiceLine",
     8,
     0,
     {"procedure", "charge", "paid", "revenue_code", "control_number", "service_date",
      "adjustments", "segment_number"},
     NULL,
     {0}},
    {"ClaimPayment",
     15,
     0,
     {"patient_control_number", "status", "charge", "paid", "patient_responsibility",
      "filing_indicator", "payer_claim_number", "facility_type", "frequency",
      "original_payer_claim_number", "statement_from", "statement_to", "adjustments", "lines",
      "segment_number"},
     NULL,
     {0}},
    {"Event",
     12,
     1,
     {"id", "type", "schema_version", "occurred_at", "recorded_at", "entity", "facility", "keys",
      "correlation_id", "causation_id", "source", "data"},
     NULL,
     {0}},
    {"SourceRef", 5, 1, {"channel", "raw_id", "unit_id", "segment", "path"}, NULL, {0}},
};

/* A borrowed slot value of obj, an instance of exactly the shape's class; NULL (and no
 * exception) when obj is anything else or the slot is empty. */
static PyObject *
slot(PyObject *obj, int which, int field)
{
    const Shape *shape = &shapes[which];
    if (Py_TYPE(obj) != shape->type) {
        return NULL;
    }
    return *(PyObject **)((char *)obj + shape->offsets[field]);
}

/* -- garbage collection ------------------------------------------------------------------
 *
 * The containers made here (an event, its source, its data dict and the lists in it) are
 * taken off the cyclic GC's lists, as CPython does by itself for tuples and dicts of atomic
 * values: they hold only str/int/bool/None/datetime, dicts of those, and each other, so they
 * are acyclic when made, and an event is never changed afterwards (events are immutable
 * envelopes; nothing in revbridge mutates an event's data).  A dict tracks itself again if
 * a container is ever stored in it.  Tracking them made the collector scan every live event
 * of a remittance again and again while its later claims were built (measured: ~10% of
 * parse + check + normalise, bench/bench_x12_parse.py).  Reference counting still frees them. */

static PyObject *
untracked(PyObject *obj)
{
    if (obj != NULL) {
        PyObject_GC_UnTrack(obj);
    }
    return obj;
}

/* A new instance of a built shape, untracked; steals the references in values (all of them,
 * even on failure, and NULL values make it fail). */
static PyObject *
build(int which, PyObject **values)
{
    Shape *shape = &shapes[which];
    int complete = 1;
    for (int i = 0; i < shape->size; i++) {
        complete &= values[i] != NULL;
    }
    PyObject *obj = complete ? shape->type->tp_alloc(shape->type, 0) : NULL;
    for (int i = 0; i < shape->size; i++) {
        if (obj == NULL) {
            Py_XDECREF(values[i]);
        }
        else {
            *(PyObject **)((char *)obj + shape->offsets[i]) = values[i];
        }
    }
    return untracked(obj);
}

/* -- configuration ----------------------------------------------------------------------- */

static PyObject *money_str = NULL;       /* domain.money.money_str: amounts not in plain form */
static PyObject *status_kinds = NULL;    /* x12_835.STATUS_KINDS */
static PyObject *unknown_kind = NULL;    /* its default */
static PyObject *secondary = NULL;       /* x12_835.SECONDARY_STATUSES */
static PyObject *adjudicated = NULL;     /* EventType.CLAIM_ADJUDICATED */
static PyObject *reversed_type = NULL;   /* EventType.CLAIM_REVERSED */
static PyObject *schema_version = NULL;  /* x12_835.SCHEMA_VERSION */
static unsigned __int128 id_stride = 0;  /* x12_835._ID_STRIDE */

#define TAIL_MASK ((((unsigned __int128)1) << 80) - 1)

/* A non-negative int below 2**80 as a 128-bit integer. */
static int
u80_of(PyObject *value, unsigned __int128 *out)
{
    if (!PyLong_Check(value)) {
        PyErr_SetString(PyExc_TypeError, "expected an int");
        return -1;
    }
    PyObject *shift = PyLong_FromLong(64);
    if (shift == NULL) {
        return -1;
    }
    PyObject *high = PyNumber_Rshift(value, shift);
    Py_DECREF(shift);
    if (high == NULL) {
        return -1;
    }
    unsigned long long hi = PyLong_AsUnsignedLongLong(high); /* negative: OverflowError */
    Py_DECREF(high);
    if (hi == (unsigned long long)-1 && PyErr_Occurred()) {
        return -1;
    }
    if (hi >> 16) {
        PyErr_SetString(PyExc_OverflowError, "expected an int below 2**80");
        return -1;
    }
    unsigned long long lo = PyLong_AsUnsignedLongLongMask(value);
    if (lo == (unsigned long long)-1 && PyErr_Occurred()) {
        return -1;
    }
    *out = ((unsigned __int128)hi << 64) | lo;
    return 0;
}

/* -- interned names ---------------------------------------------------------------------- */

enum {
    K_PAYMENT, K_TRACE_NUMBER, K_PCN, K_PAYER_CLAIM, K_ORIGINAL,
    K_STATUS, K_STATUS_KIND, K_CORRECTION, K_CHARGE, K_PAID, K_RESPONSIBILITY, K_FILING,
    K_FACILITY, K_FREQUENCY, K_FROM, K_TO, K_LINES, K_ADJUSTMENTS,
    K_PROCEDURE, K_REVENUE, K_CONTROL, K_SERVICE_DATE, K_SEGMENT,
    K_GROUP, K_REASON, K_AMOUNT, K_QUANTITY, K_LEVEL, K_LINE, K_INFORMATIONAL,
    V_CLAIM, V_REVERSAL, V_OA, V_23,
    NAMES
};

static const char *name_texts[NAMES] = {
    "payment", "trace_number", "patient_control_number", "payer_claim_number",
    "original_payer_claim_number",
    "status", "status_kind", "correction", "charge", "paid", "patient_responsibility",
    "filing_indicator", "facility_type", "frequency", "statement_from", "statement_to", "lines",
    "adjustments",
    "procedure", "revenue_code", "control_number", "service_date", "segment",
    "group", "reason", "amount", "quantity", "level", "line", "informational",
    "claim", "22", "OA", "23",
};

static PyObject *names[NAMES];

/* 1 when text (exactly a str) equals the interned ASCII name. */
static int
is_name(PyObject *text, int name)
{
    PyObject *expected = names[name];
    return text == expected ||
           (PyUnicode_GET_LENGTH(text) == PyUnicode_GET_LENGTH(expected) &&
            PyUnicode_Compare(text, expected) == 0);
}

/* -- amounts ---------------------------------------------------------------------------
 *
 * money_str(value) starts with str(value), and libmpdec's string conversion is a good part of
 * building an event.  A Decimal whose exponent is 0, -1 or -2 and whose coefficient fits one
 * libmpdec word (every amount of an X12 file) renders as sign, integer part, point and two
 * digits, so that text is written directly from the Decimal's fields: CPython's private
 * layout (Modules/_decimal: PyDecObject holding libmpdec's mpd_t), as the parser's fast path
 * reads it (formats/x12/_fast835.c).  configure() compares, for a set of probes, the text
 * written so with money_str's, and keeps using str() when anything differs. */


typedef struct {
    PyObject_HEAD
    Py_hash_t hash;
    MpdMirror dec;
} DecimalMirror;

static PyTypeObject *decimal_type = NULL; /* NULL: every amount goes through str() */

/* The text of money_str(value) when value is a Decimal of the plain kind above, else NULL
 * without an exception (the caller takes the general way). */
static PyObject *
direct_money(PyObject *value)
{
    if (decimal_type == NULL || Py_TYPE(value) != decimal_type) {
        return NULL;
    }
    const MpdMirror *dec = &((const DecimalMirror *)value)->dec;
    if ((dec->flags & MPD_SPECIAL) || dec->len != 1 || dec->exp > 0 || dec->exp < -2) {
        return NULL;
    }
    uint64_t coefficient = dec->data[0], scale = dec->exp == 0 ? 1 : dec->exp == -1 ? 10 : 100;
    uint64_t whole = coefficient / scale, cents = coefficient % scale * (100 / scale);
    char digits[24];
    int n = 0;
    do {
        digits[n++] = (char)('0' + whole % 10);
        whole /= 10;
    } while (whole);
    int negative = dec->flags & MPD_NEG;
    PyObject *text = PyUnicode_New(negative + n + 3, 127);
    if (text == NULL) {
        return NULL;
    }
    char *out = (char *)PyUnicode_DATA(text);
    if (negative) {
        *out++ = '-';
    }
    while (n) {
        *out++ = digits[--n];
    }
    out[0] = '.';
    out[1] = (char)('0' + cents / 10);
    out[2] = (char)('0' + cents % 10);
    return text;
}

/* money_str(value) from str(value): its text when it is plain with two places, with ".00"
 * when it is only digits, else money_str itself (which formats it).  New reference. */
static PyObject *
money_from_str(PyObject *value)
{
    PyObject *text = PyObject_Str(value);
    if (text == NULL) {
        return NULL;
    }
    if (PyUnicode_READY(text) < 0) {
        Py_DECREF(text);
        return NULL;
    }
    Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    const char *p = PyUnicode_IS_ASCII(text) ? (const char *)PyUnicode_DATA(text) : NULL;
    if (p != NULL && n > 2 && p[n - 3] == '.') {
        return text;
    }
    int digits = p != NULL && n > 0;
    for (Py_ssize_t i = 0; i < n && digits; i++) {
        digits = p[i] >= '0' && p[i] <= '9';
    }
    PyObject *plain = digits ? PyUnicode_New(n + 3, 127) : NULL;
    if (plain != NULL) {
        char *out = (char *)PyUnicode_DATA(plain);
        memcpy(out, p, (size_t)n);
        memcpy(out + n, ".00", 3);
    }
    Py_DECREF(text);
    return digits ? plain : PyObject_CallOneArg(money_str, value);
}

/* money_str(value).  New reference. */
static PyObject *
money_text(PyObject *value)
{
    PyObject *text = direct_money(value);
    return text != NULL || PyErr_Occurred() ? text : money_from_str(value);
}

/* Probes of configure_direct: plain two-place, one-place and whole amounts of both signs,
 * zeros, the longest X12 amount, and kinds that take the general way. */
static const char *money_probes[] = {
    "0",      "-0",      "0.00",   "-0.00", "7.5",          "-7.5",         "12.05",
    ".05",    "-.05",    "100",    "-480",  "1234567890",   "-12345678.90", "99999999.99",
    "5.125",  "1E+2",    "-1E+2",  "0E-7",  "123456789012345678901234567890",
};

/* Use direct_money when asked and the Decimals of decimal match the mirror: 1 in use, 0 not,
 * -1 error. */
static int
configure_direct(PyObject *decimal, int wanted)
{
    Py_CLEAR(decimal_type);
    if (!PyType_Check(decimal)) {
        PyErr_SetString(PyExc_TypeError, "decimal must be a class");
        return -1;
    }
    if (!wanted) {
        return 0;
    }
    PyTypeObject *type = (PyTypeObject *)decimal;
    if (type->tp_basicsize < (Py_ssize_t)sizeof(DecimalMirror) || type->tp_itemsize != 0 ||
        PyType_IS_GC(type)) {
        return 0;
    }
    PyObject *sample = PyObject_CallFunction(decimal, "s", "7.50");
    if (sample == NULL) {
        return -1;
    }
    /* Before any data pointer is followed: the fields of 7.50, its one word inline. */
    const DecimalMirror *mirror = (const DecimalMirror *)sample;
    int plain = Py_TYPE(sample) == type && mirror->dec.flags == (16 | 32) /* static, static data */ &&
                mirror->dec.exp == -2 && mirror->dec.digits == 3 && mirror->dec.len == 1 &&
                mirror->dec.alloc >= 1 &&
                mirror->dec.data == (uint64_t *)((char *)sample + sizeof(DecimalMirror)) &&
                mirror->dec.data[0] == 750;
    Py_DECREF(sample);
    if (!plain) {
        return 0;
    }
    decimal_type = (PyTypeObject *)Py_NewRef(type);
    for (size_t i = 0; i < sizeof(money_probes) / sizeof(money_probes[0]); i++) {
        PyObject *probe = PyObject_CallFunction(decimal, "s", money_probes[i]);
        PyObject *expected = probe == NULL ? NULL : PyObject_CallOneArg(money_str, probe);
        PyObject *got = expected == NULL ? NULL : money_text(probe);
        int same = got == NULL ? -1 : PyUnicode_Compare(got, expected) == 0;
        Py_XDECREF(probe);
        Py_XDECREF(expected);
        Py_XDECREF(got);
        if (same != 1) {
            Py_CLEAR(decimal_type);
            return same < 0 && PyErr_Occurred() ? -1 : 0;
        }
    }
    return 1;
}

/* -- values ------------------------------------------------------------------------------ */

/* str(value), or None for None. */
static PyObject *
optional_str(PyObject *value)
{
    return value == Py_None ? Py_NewRef(Py_None) : PyObject_Str(value);
}

typedef struct {
    int key; /* CCYYMMDD, 0: empty entry */
    PyObject *text;
} DateEntry;

static DateEntry date_cache[1 << DATE_CACHE_BITS];

/* x12_835._iso: None for None, the ISO text of a date (exactly a date); NULL without an
 * exception for anything else (the caller declines). */
static PyObject *
iso_text(PyObject *value)
{
    if (value == Py_None) {
        return Py_NewRef(Py_None);
    }
    if (!PyDate_CheckExact(value)) {
        return NULL;
    }
    int year = PyDateTime_GET_YEAR(value), month = PyDateTime_GET_MONTH(value),
        day = PyDateTime_GET_DAY(value);
    int key = year * 10000 + month * 100 + day;
    DateEntry *entry =
        &date_cache[((uint32_t)key * 0x9E3779B9u) >> (32 - DATE_CACHE_BITS)];
    if (entry->key == key) {
        return Py_NewRef(entry->text);
    }
    PyObject *text = PyUnicode_New(10, 127);
    if (text == NULL) {
        return NULL;
    }
    char *out = (char *)PyUnicode_DATA(text); /* CCYY-MM-DD: date's range is 1..9999 */
    const int parts[3][2] = {{year, 4}, {month, 2}, {day, 2}};
    for (int part = 0, at = 0; part < 3; part++) {
        for (int i = parts[part][1] - 1, value = parts[part][0]; i >= 0; i--, value /= 10) {
            out[at + i] = (char)('0' + value % 10);
        }
        at += parts[part][1];
        if (part < 2) {
            out[at++] = '-';
        }
    }
    Py_XSETREF(entry->text, Py_NewRef(text));
    entry->key = key;
    return text;
}

/* uuid7_from_int(unix_ms, tail) for tail = (base + ordinal * _ID_STRIDE) % 2**80. */
static PyObject *
event_id(uint64_t unix_ms, unsigned __int128 base, Py_ssize_t ordinal)
{
    unsigned __int128 tail = (base + (unsigned __int128)ordinal * id_stride) & TAIL_MASK;
    unsigned __int128 value = (unsigned __int128)(unix_ms & ((1ULL << 48) - 1)) << 80;
    value |= (unsigned __int128)0x7 << 76;
    value |= ((tail >> 62) & 0xFFF) << 64;
    value |= (unsigned __int128)0x2 << 62;
    value |= tail & ((((unsigned __int128)1) << 62) - 1);
    static const char hex[] = "0123456789abcdef";
    PyObject *text = PyUnicode_New(36, 127);
    if (text == NULL) {
        return NULL;
    }
    char *out = (char *)PyUnicode_DATA(text);
    for (int i = 35, shift = 0; i >= 0; i--) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            out[i] = '-';
            continue;
        }
        out[i] = hex[(unsigned)(value >> shift) & 0xF];
        shift += 4;
    }
    return text;
}

/* -- dicts ------------------------------------------------------------------------------
 *
 * Each kind of dict built here has a fixed sequence of str keys.  A dict of that kind is a
 * copy of a template holding those keys (values None): the copy clones the template's table
 * in one go (sized for its keys and str-keyed, like a dict display's), where inserting key by
 * key would grow the table and, with _PyDict_NewPresized, make a general-keys table (larger
 * entries, slower look-ups).
 *
 * The values are then written into the copy's entries, in order: a PyDict_SetItem per value
 * (a look-up of a key known to be there) was half of building an event.  That reads the
 * table through CPython 3.11's private layout (Include/internal/pycore_dict.h: the keys
 * object's header, then its index bytes, then (key, value) entries), so it is compiled for
 * 3.11 only, and every copy is checked first: a str-keyed combined table of its own whose
 * entries are exactly the template's keys, in order, with None values.  Any other copy (and
 * any other Python) gets PyDict_SetItem.  The dict is then tracked by the GC as PyDict_SetItem
 * would have it: if a value is a tracked container. */

typedef struct {
    int size;
    int keys[13];
    PyObject *template;
} DictKind;

enum { KEYS_DICT, CLAIM_DICT, LINE_DICT, ADJUSTMENT_DICT, DICT_KINDS };

static DictKind dict_kinds[DICT_KINDS] = {
    {3, {K_PAYMENT, K_TRACE_NUMBER, K_PCN}, NULL},
    {13,
     {K_STATUS, K_STATUS_KIND, K_CORRECTION, K_CHARGE, K_PAID, K_RESPONSIBILITY, K_FILING,
      K_FACILITY, K_FREQUENCY, K_FROM, K_TO, K_LINES, K_ADJUSTMENTS},
     NULL},
    {7, {K_PROCEDURE, K_CHARGE, K_PAID, K_REVENUE, K_CONTROL, K_SERVICE_DATE, K_SEGMENT}, NULL},
    {8,
     {K_GROUP, K_REASON, K_AMOUNT, K_QUANTITY, K_LEVEL, K_LINE, K_INFORMATIONAL, K_SEGMENT},
     NULL},
};

#if PY_VERSION_HEX >= 0x030B0000 && PY_VERSION_HEX < 0x030C0000
#define DIRECT_DICTS 1

typedef struct { /* PyDictKeysObject of 3.11 */
    Py_ssize_t dk_refcnt;
    uint8_t dk_log2_size;
    uint8_t dk_log2_index_bytes;
    uint8_t dk_kind;
    uint32_t dk_version;
    Py_ssize_t dk_usable;
    Py_ssize_t dk_nentries;
    char dk_indices[];
} KeysMirror;

typedef struct { /* PyDictUnicodeEntry of 3.11 */
    PyObject *key, *value;
} EntryMirror;

#define DICT_KEYS_UNICODE 1

static int direct_dicts = 0; /* set by configure: 1 when copies of every template check out */

/* The entries of a copy of the kind's template, or NULL when it is not laid out as one. */
static EntryMirror *
template_entries(PyObject *dict, const DictKind *k)
{
    const PyDictObject *d = (const PyDictObject *)dict;
    KeysMirror *keys = (KeysMirror *)d->ma_keys;
    if (d->ma_values != NULL || d->ma_used != k->size || keys->dk_refcnt != 1 ||
        keys->dk_kind != DICT_KEYS_UNICODE || keys->dk_nentries != k->size ||
        keys->dk_usable < 0 || keys->dk_log2_size > 8 ||
        keys->dk_log2_index_bytes != keys->dk_log2_size) { /* tables of 2**8 slots or fewer */
        return NULL;
    }
    EntryMirror *entries =
        (EntryMirror *)(keys->dk_indices + ((size_t)1 << keys->dk_log2_index_bytes));
    for (int i = 0; i < k->size; i++) {
        if (entries[i].key != names[k->keys[i]] || entries[i].value != Py_None) {
            return NULL;
        }
    }
    return entries;
}
#endif

static int
make_templates(void)
{
    for (int kind = 0; kind < DICT_KINDS; kind++) {
        DictKind *k = &dict_kinds[kind];
        if (k->template != NULL) {
            continue;
        }
        PyObject *template = PyDict_New();
        for (int i = 0; template != NULL && i < k->size; i++) {
            if (PyDict_SetItem(template, names[k->keys[i]], Py_None) < 0) {
                Py_CLEAR(template);
            }
        }
        if (template == NULL) {
            return -1;
        }
        k->template = template;
    }
    return 0;
}

/* Write values in place when asked and a copy of every template checks out: 1 in use, 0 not,
 * -1 error. */
static int
configure_direct_dicts(int wanted)
{
#ifdef DIRECT_DICTS
    direct_dicts = 0;
    for (int kind = 0; wanted && kind < DICT_KINDS; kind++) {
        PyObject *copy = PyDict_Copy(dict_kinds[kind].template);
        if (copy == NULL) {
            return -1;
        }
        int plain = template_entries(copy, &dict_kinds[kind]) != NULL;
        Py_DECREF(copy);
        if (!plain) {
            return 0;
        }
    }
    direct_dicts = wanted;
    return wanted;
#else
    return 0 * wanted;
#endif
}

/* Track dict as PyDict_SetItem would have: when a value may be part of a cycle. */
static void
maintain_tracking(PyObject *dict, PyObject **values, int n)
{
    for (int i = 0; i < n && !PyObject_GC_IsTracked(dict); i++) {
        if (PyObject_IS_GC(values[i]) && PyObject_GC_IsTracked(values[i])) {
            PyObject_GC_Track(dict);
        }
    }
}

/* A new dict of the kind with these values, in its key order; steals every value, even on
 * failure (and a NULL value makes it fail). */
static PyObject *
new_dict(int kind, PyObject **values)
{
    const DictKind *k = &dict_kinds[kind];
    int complete = 1;
    for (int i = 0; i < k->size; i++) {
        complete &= values[i] != NULL;
    }
    PyObject *dict = complete ? PyDict_Copy(k->template) : NULL;
#ifdef DIRECT_DICTS
    EntryMirror *entries = dict == NULL || !direct_dicts ? NULL : template_entries(dict, k);
    if (entries != NULL) {
        for (int i = 0; i < k->size; i++) {
            entries[i].value = values[i]; /* takes the reference */
            Py_DECREF(Py_None);           /* the copy's */
        }
        maintain_tracking(dict, values, k->size);
        return dict;
    }
#endif
    for (int i = 0; i < k->size; i++) {
        if (dict != NULL && PyDict_SetItem(dict, names[k->keys[i]], values[i]) < 0) {
            Py_CLEAR(dict);
        }
        Py_XDECREF(values[i]);
    }
    return dict;
}

/* A value or its absence: DECLINE is returned up the call chain when the reference must run
 * (no exception set); NULL with an exception on errors. */
static PyObject DECLINED;
#define DECLINE (&DECLINED)

/* -- configuration (continued) -------------------------------------------------------- */

/* configure(event, source_ref, claim_payment, service_line, adjustment, money_str, decimal,
 *           status_kinds, unknown_kind, secondary_statuses, adjudicated, reversed,
 *           schema_version, id_stride, direct=True)
 *   -> whether amounts and dict values are written directly (see "amounts" and "dicts") */
static PyObject *
configure(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *classes[SHAPES], *money, *decimal, *kinds, *unknown, *statuses, *adjudicated_type,
        *reversed_kind, *version, *stride;
    int direct = 1;
    if (!PyArg_ParseTuple(args, "OOOOOOOO!UO!UUO!O!|p:configure", &classes[EVENT],
                          &classes[SOURCE_REF], &classes[CLAIM_PAYMENT], &classes[SERVICE_LINE],
                          &classes[ADJUSTMENT], &money, &decimal, &PyDict_Type, &kinds, &unknown,
                          &PyFrozenSet_Type, &statuses, &adjudicated_type, &reversed_kind,
                          &PyLong_Type, &version, &PyLong_Type, &stride, &direct)) {
        return NULL;
    }
    if (!PyCallable_Check(money)) {
        PyErr_SetString(PyExc_TypeError, "money_str must be callable");
        return NULL;
    }
    unsigned __int128 stride_value;
    if (u80_of(stride, &stride_value) < 0) {
        return NULL;
    }
    for (int i = 0; i < SHAPES; i++) {
        if (configure_shape(&shapes[i], classes[i], "_fast_x12_835") < 0) {
            return NULL;
        }
    }
    Py_XSETREF(status_kinds, Py_NewRef(kinds)); /* the very dict: .get as the reference */
    Py_XSETREF(money_str, Py_NewRef(money));
    Py_XSETREF(unknown_kind, Py_NewRef(unknown));
    Py_XSETREF(secondary, Py_NewRef(statuses));
    Py_XSETREF(adjudicated, Py_NewRef(adjudicated_type));
    Py_XSETREF(reversed_type, Py_NewRef(reversed_kind));
    Py_XSETREF(schema_version, Py_NewRef(version));
    id_stride = stride_value;
    int amounts = configure_direct(decimal, direct);
    int dicts = amounts < 0 ? -1 : configure_direct_dicts(direct);
    return dicts < 0 ? NULL : PyBool_FromLong(amounts && dicts);
}

/* -- adjustments ------------------------------------------------------------------------- */

/* x12_835._nested for one adjustment. */
static PyObject *
adjustment_dict(PyObject *adjustment, PyObject *level, PyObject *line, int is_secondary)
{
    PyObject *group = slot(adjustment, ADJUSTMENT, A_GROUP);
    PyObject *reason = slot(adjustment, ADJUSTMENT, A_REASON);
    PyObject *amount = slot(adjustment, ADJUSTMENT, A_AMOUNT);
    PyObject *quantity = slot(adjustment, ADJUSTMENT, A_QUANTITY);
    PyObject *segment = slot(adjustment, ADJUSTMENT, A_SEGMENT);
    if (group == NULL || reason == NULL || amount == NULL || quantity == NULL ||
        segment == NULL || !PyUnicode_CheckExact(group) || !PyUnicode_CheckExact(reason)) {
        return DECLINE;
    }
    int informational = is_secondary && is_name(group, V_OA) && is_name(reason, V_23);
    PyObject *values[] = {Py_NewRef(group),  Py_NewRef(reason),
                          money_text(amount), optional_str(quantity),
                          Py_NewRef(level),  Py_NewRef(line),
                          PyBool_FromLong(informational), Py_NewRef(segment)};
    return new_dict(ADJUSTMENT_DICT, values);
}

/* Put the dicts of a tuple of adjustments in list from index *at on. */
static PyObject *
add_nested(PyObject *list, Py_ssize_t *at, PyObject *adjustments, PyObject *level,
           PyObject *line, int is_secondary)
{
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(adjustments); i++) {
        PyObject *item = adjustment_dict(PyTuple_GET_ITEM(adjustments, i), level, line,
                                         is_secondary);
        if (item == NULL || item == DECLINE) {
            return item;
        }
        PyList_SET_ITEM(list, (*at)++, item);
    }
    return list;
}

/* x12_835._nested_adjustments: claim level, then each line's. */
static PyObject *
nested_adjustments(PyObject *claim_adjustments, PyObject *lines, int is_secondary)
{
    Py_ssize_t total = PyTuple_GET_SIZE(claim_adjustments);
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(lines); i++) {
        PyObject *adjustments = slot(PyTuple_GET_ITEM(lines, i), SERVICE_LINE, L_ADJUSTMENTS);
        if (adjustments == NULL || !PyTuple_CheckExact(adjustments)) {
            return DECLINE;
        }
        total += PyTuple_GET_SIZE(adjustments);
    }
    PyObject *list = PyList_New(total);
    if (list == NULL) {
        return NULL;
    }
    Py_ssize_t at = 0;
    PyObject *done = add_nested(list, &at, claim_adjustments, names[V_CLAIM], Py_None,
                                is_secondary);
    for (Py_ssize_t i = 0; done == list && i < PyTuple_GET_SIZE(lines); i++) {
        PyObject *line = PyTuple_GET_ITEM(lines, i);
        PyObject *adjustments = slot(line, SERVICE_LINE, L_ADJUSTMENTS);
        if (PyTuple_GET_SIZE(adjustments) == 0) {
            continue;
        }
        PyObject *reference = slot(line, SERVICE_LINE, L_CONTROL);
        int named = reference == NULL ? -1 : PyObject_IsTrue(reference);
        if (named < 0) {
            done = PyErr_Occurred() ? NULL : DECLINE;
            break;
        }
        if (!named) {
            reference = slot(line, SERVICE_LINE, L_PROCEDURE);
        }
        done = reference == NULL ? DECLINE
                                 : add_nested(list, &at, adjustments, names[K_LINE], reference,
                                              is_secondary);
    }
    if (done != list) {
        Py_DECREF(list); /* items not yet set are NULL: list_dealloc skips them */
        return done;
    }
    return untracked(list);
}

/* -- lines ------------------------------------------------------------------------------- */

static PyObject *
line_dict(PyObject *line)
{
    PyObject *fields[] = {slot(line, SERVICE_LINE, L_PROCEDURE), slot(line, SERVICE_LINE, L_CHARGE),
                          slot(line, SERVICE_LINE, L_PAID),      slot(line, SERVICE_LINE, L_REVENUE),
                          slot(line, SERVICE_LINE, L_CONTROL),   slot(line, SERVICE_LINE, L_DATE),
                          slot(line, SERVICE_LINE, L_SEGMENT)};
    for (int i = 0; i < 7; i++) {
        if (fields[i] == NULL) {
            return DECLINE;
        }
    }
    PyObject *service_date = iso_text(fields[5]);
    if (service_date == NULL) {
        return PyErr_Occurred() ? NULL : DECLINE;
    }
    PyObject *values[] = {Py_NewRef(fields[0]), money_text(fields[1]), money_text(fields[2]),
                          Py_NewRef(fields[3]), Py_NewRef(fields[4]),  service_date,
                          Py_NewRef(fields[6])};
    return new_dict(LINE_DICT, values);
}

static PyObject *
line_dicts(PyObject *lines)
{
    PyObject *list = PyList_New(PyTuple_GET_SIZE(lines));
    if (list == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(lines); i++) {
        PyObject *item = line_dict(PyTuple_GET_ITEM(lines, i));
        if (item == NULL || item == DECLINE) {
            Py_DECREF(list);
            return item;
        }
        PyList_SET_ITEM(list, i, item);
    }
    return untracked(list);
}

/* -- claims ------------------------------------------------------------------------------ */

/* What every event of the remittance shares (arguments of claim_events). */
typedef struct {
    uint64_t unix_ms;
    unsigned __int128 base;
    PyObject *occurred_at, *recorded_at, *correlation_id, *channel, *raw_id, *unit_id, *payment,
        *trace_number;
} Remittance;

/* x12_835._claim_keys. */
static PyObject *
claim_keys(const Remittance *r, PyObject **claim)
{
    PyObject *values[] = {Py_NewRef(r->payment), Py_NewRef(r->trace_number),
                          Py_NewRef(claim[C_PCN])};
    PyObject *dict = new_dict(KEYS_DICT, values);
    static const int optional[][2] = {{C_PAYER_CLAIM, K_PAYER_CLAIM}, {C_ORIGINAL, K_ORIGINAL}};
    for (int i = 0; dict != NULL && i < 2; i++) {
        PyObject *value = claim[optional[i][0]];
        int present = PyObject_IsTrue(value);
        if (present < 0 || (present && PyDict_SetItem(dict, names[optional[i][1]], value) < 0)) {
            Py_CLEAR(dict);
        }
    }
    return dict;
}

/* x12_835._claim_data with its "adjustments" (_nested_adjustments). */
static PyObject *
claim_data(PyObject **claim, int correction)
{
    PyObject *status = claim[C_STATUS];
    PyObject *kind = PyDict_GetItemWithError(status_kinds, status);
    if (kind == NULL && PyErr_Occurred()) {
        return NULL;
    }
    int is_secondary = PySet_Contains(secondary, status);
    if (is_secondary < 0) {
        return NULL;
    }
    PyObject *statement_from = iso_text(claim[C_FROM]);
    PyObject *statement_to = statement_from == NULL ? NULL : iso_text(claim[C_TO]);
    PyObject *lines = statement_to == NULL ? NULL : line_dicts(claim[C_LINES]);
    PyObject *adjustments =
        lines == NULL || lines == DECLINE
            ? NULL
            : nested_adjustments(claim[C_ADJUSTMENTS], claim[C_LINES], is_secondary);
    if (adjustments == NULL || adjustments == DECLINE) {
        PyObject *outcome = PyErr_Occurred() ? NULL : DECLINE;
        Py_XDECREF(statement_from);
        Py_XDECREF(statement_to);
        if (lines != DECLINE) {
            Py_XDECREF(lines);
        }
        return outcome;
    }
    PyObject *responsibility = claim[C_RESPONSIBILITY] == Py_None
                                   ? Py_NewRef(Py_None)
                                   : money_text(claim[C_RESPONSIBILITY]);
    PyObject *values[] = {Py_NewRef(status),
                          Py_NewRef(kind == NULL ? unknown_kind : kind),
                          PyBool_FromLong(correction),
                          money_text(claim[C_CHARGE]),
                          money_text(claim[C_PAID]),
                          responsibility,
                          Py_NewRef(claim[C_FILING]),
                          Py_NewRef(claim[C_FACILITY]),
                          Py_NewRef(claim[C_FREQUENCY]),
                          statement_from,
                          statement_to,
                          lines,
                          adjustments};
    return untracked(new_dict(CLAIM_DICT, values));
}

/* _Builder.event for a claim's event. */
static PyObject *
claim_event(const Remittance *r, Py_ssize_t ordinal, PyObject **claim, PyObject *type,
            int correction)
{
    PyObject *data = claim_data(claim, correction);
    if (data == NULL || data == DECLINE) {
        return data;
    }
    PyObject *source_values[] = {Py_NewRef(r->channel), Py_NewRef(r->raw_id),
                                 Py_NewRef(r->unit_id), Py_NewRef(claim[C_SEGMENT]),
                                 Py_NewRef(Py_None)};
    PyObject *values[] = {event_id(r->unix_ms, r->base, ordinal),
                          Py_NewRef(type),
                          Py_NewRef(schema_version),
                          Py_NewRef(r->occurred_at),
                          Py_NewRef(r->recorded_at),
                          Py_NewRef(Py_None),
                          Py_NewRef(Py_None),
                          claim_keys(r, claim),
                          Py_NewRef(r->correlation_id),
                          Py_NewRef(Py_None),
                          build(SOURCE_REF, source_values),
                          data};
    return build(EVENT, values);
}

/* The claim's slots (borrowed), or 0 when it is not a ClaimPayment as declared. */
static int
claim_slots(PyObject *claim, PyObject **out)
{
    for (int i = 0; i < shapes[CLAIM_PAYMENT].size; i++) {
        if ((out[i] = slot(claim, CLAIM_PAYMENT, i)) == NULL) {
            return 0;
        }
    }
    return PyUnicode_CheckExact(out[C_STATUS]) && PyTuple_CheckExact(out[C_ADJUSTMENTS]) &&
           PyTuple_CheckExact(out[C_LINES]);
}

/* The correction flag of x12_835._claim_bodies; records a reversal's account.  -1: error. */
static int
correction_of(PyObject **claim, int reversal, PyObject *reversed_accounts)
{
    if (reversal) {
        return PySet_Add(reversed_accounts, claim[C_PCN]) < 0 ? -1 : 0;
    }
    if (claim[C_ORIGINAL] != Py_None) {
        return 1;
    }
    return PySet_Contains(reversed_accounts, claim[C_PCN]);
}

static PyObject *
claim_events_of(const Remittance *r, PyObject *claims, Py_ssize_t first_ordinal)
{
    PyObject *events = PyList_New(PyTuple_GET_SIZE(claims));
    PyObject *reversed_accounts = PySet_New(NULL);
    if (events == NULL || reversed_accounts == NULL) {
        Py_XDECREF(events);
        Py_XDECREF(reversed_accounts);
        return NULL;
    }
    PyObject *outcome = events;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(claims); i++) {
        PyObject *claim[MAX_FIELDS];
        if (!claim_slots(PyTuple_GET_ITEM(claims, i), claim)) {
            outcome = DECLINE;
            break;
        }
        int reversal = is_name(claim[C_STATUS], V_REVERSAL);
        int correction = correction_of(claim, reversal, reversed_accounts);
        PyObject *event =
            correction < 0 ? NULL
                           : claim_event(r, first_ordinal + i, claim,
                                         reversal ? reversed_type : adjudicated, correction);
        if (event == NULL || event == DECLINE) {
            outcome = event;
            break;
        }
        PyList_SET_ITEM(events, i, event);
    }
    Py_DECREF(reversed_accounts);
    if (outcome != events) {
        Py_DECREF(events);
    }
    return outcome;
}

/* claim_events(claims, first_ordinal, unix_ms, base, occurred_at, recorded_at,
 *              correlation_id, channel, raw_id, unit_id, payment, trace_number)
 *   -> list[Event] | None */
static PyObject *
claim_events(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *claims, *unix_ms, *base;
    Py_ssize_t first_ordinal;
    Remittance r;
    if (!PyArg_ParseTuple(args, "O!nO!O!OOOOOOOO:claim_events", &PyTuple_Type, &claims,
                          &first_ordinal, &PyLong_Type, &unix_ms, &PyLong_Type, &base,
                          &r.occurred_at, &r.recorded_at, &r.correlation_id, &r.channel,
                          &r.raw_id, &r.unit_id, &r.payment, &r.trace_number)) {
        return NULL;
    }
    if (shapes[EVENT].type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "_fast_x12_835.configure() was not called");
        return NULL;
    }
    if (first_ordinal < 0 || first_ordinal > PY_SSIZE_T_MAX - PyTuple_GET_SIZE(claims)) {
        PyErr_SetString(PyExc_ValueError, "first_ordinal out of range");
        return NULL;
    }
    r.unix_ms = PyLong_AsUnsignedLongLongMask(unix_ms); /* as Python's unix_ms & (2**48 - 1) */
    if (r.unix_ms == (uint64_t)-1 && PyErr_Occurred()) {
        return NULL;
    }
    if (u80_of(base, &r.base) < 0) {
        return NULL;
    }
    PyObject *events = claim_events_of(&r, claims, first_ordinal);
    return events == DECLINE ? Py_NewRef(Py_None) : events;
}

static PyMethodDef methods[] = {
    {"configure", configure, METH_VARARGS,
     "configure(event, source_ref, claim_payment, service_line, adjustment, money_str, decimal, "
     "status_kinds, unknown_kind, secondary_statuses, adjudicated, reversed, schema_version, "
     "id_stride, direct=True) -> bool (amounts and dict values written directly)"},
    {"claim_events", claim_events, METH_VARARGS,
     "claim_events(claims, first_ordinal, unix_ms, base, occurred_at, recorded_at, "
     "correlation_id, channel, raw_id, unit_id, payment, trace_number) -> list | None"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    .m_base = PyModuleDef_HEAD_INIT,
    .m_name = "_fast_x12_835",
    .m_doc = "C fast path of the x12_835/2 claim events.",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC
PyInit__fast_x12_835(void)
{
    PyDateTime_IMPORT;
    if (PyDateTimeAPI == NULL) {
        return NULL;
    }
    for (int i = 0; i < NAMES; i++) {
        if (names[i] == NULL && (names[i] = PyUnicode_InternFromString(name_texts[i])) == NULL) {
            return NULL;
        }
    }
    if (make_templates() < 0) {
        return NULL;
    }
    return PyModule_Create(&module_def);
}
