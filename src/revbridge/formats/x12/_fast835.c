/* Fast path of parse835.parse_835_bytes: tokenize one ST..SE and build the model in C.
 * (Also one helper of the streaming tokenizer, separator_after, at the end.)
 *
 * The pure-Python parser (parse835.py) is the reference.  This module handles well-formed
 * input only: whenever the reference would raise (bad value, missing segment, truncated
 * data, ...) ``parse`` returns None and the caller re-runs the reference, which produces
 * the exact error.  So error messages and positions are the reference's by construction.
 *
 * Model objects are created with the class's own allocator and their slots are filled
 * directly (offsets read from the class's member descriptors by ``configure``); the
 * classes have no __post_init__, so this is what their __init__ would store.
 *
 * Memory safety: every element access goes through el(), which checks the index; spans
 * always lie inside the input buffer (a bytes object kept alive by the caller).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <datetime.h>
#include <stdint.h>
#include <string.h>
#include <structmember.h>

#include "../../_native/slot_shapes.h"

#define MAX_AMOUNT_DIGITS 10
#define MAX_QUANTITY_DIGITS 15
#define DECIMAL_CACHE_BITS 12
#define DATE_CACHE_BITS 12

/* -- model classes ---------------------------------------------------------------------- */

enum { ADJUSTMENT, SERVICE_LINE, CLAIM_PAYMENT, PROVIDER_ADJUSTMENT, SHAPES };

/* Field order = the argument order used by build() below. */
static Shape shapes[SHAPES] = {
    {"Adjustment", 5, 1, {"group", "reason", "amount", "quantity", "segment_number"}, NULL, {0}},
    {"ServiceLine",
     10,
     1,
     {"procedure", "charge", "paid", "revenue_code", "units", "control_number", "service_date",
      "allowed", "adjustments", "segment_number"},
     NULL,
     {0}},
    {"ClaimPayment",
     15,
     1,
     {"patient_control_number", "status", "charge", "paid", "patient_responsibility",
      "filing_indicator", "payer_claim_number", "facility_type", "frequency",
      "original_payer_claim_number", "statement_from", "statement_to", "adjustments", "lines",
      "segment_number"},
     NULL,
     {0}},
    {"ProviderAdjustment",
     6,
     1,
     {"provider_id", "fiscal_period_end", "reason", "reference", "amount", "segment_number"},
     NULL,
     {0}},
};

static PyObject *make_decimal = NULL; /* str -> Decimal, exact (see parse835.py) */
static PyObject *cas_groups[5] = {NULL}; /* CO PR OA PI CR, same order as cas_group_names */
static const char *cas_group_names[5] = {"CO", "PR", "OA", "PI", "CR"};

/* A new model instance; steals the references in values (all of them, even on failure).
 *
 * The instance is untracked by the cyclic GC, as CPython does for tuples of atomic values:
 * the model is frozen and refers only to str/Decimal/date/int/None and to tuples of other
 * (untracked) model objects, so it cannot be part of a reference cycle.  Tracking ~100k
 * such objects per file made collections dominate parsing time. */
static PyObject *
build(int which, PyObject **values)
{
    Shape *shape = &shapes[which];
    PyObject *obj = shape->type->tp_alloc(shape->type, 0);
    for (int i = 0; i < shape->size; i++) {
        if (obj == NULL) {
            Py_DECREF(values[i]);
        }
        else {
            *(PyObject **)((char *)obj + shape->offsets[i]) = values[i];
        }
    }
    if (obj != NULL && PyObject_IS_GC(obj)) {
        PyObject_GC_UnTrack(obj);
    }
    return obj;
}

/* -- spans ------------------------------------------------------------------------------- */

typedef struct {
    const char *p;
    Py_ssize_t n;
} Span;

static const Span EMPTY = {"", 0};

static int
span_is(Span s, const char *text)
{
    size_t n = strlen(text);
    return (size_t)s.n == n && memcmp(s.p, text, n) == 0;
}

typedef struct {
    uint64_t key;
    Py_ssize_t n;
    PyObject *value; /* NULL: empty entry */
} StrEntry;

#define STR_CACHE_BITS 12
static StrEntry str_cache[1 << STR_CACHE_BITS];

/* An element's text; short ones (codes) are shared through a small cache. */
static PyObject *
str_of(Span s)
{
    if (s.n > 8) {
        return PyUnicode_DecodeLatin1(s.p, s.n, NULL);
    }
    uint64_t key = 0;
    memcpy(&key, s.p, (size_t)s.n);
    StrEntry *entry =
        &str_cache[((key + (uint64_t)s.n) * 0x9E3779B97F4A7C15ULL) >> (64 - STR_CACHE_BITS)];
    if (entry->value != NULL && entry->key == key && entry->n == s.n) {
        return Py_NewRef(entry->value);
    }
    PyObject *text = PyUnicode_DecodeLatin1(s.p, s.n, NULL);
    if (text != NULL) {
        Py_XSETREF(entry->value, Py_NewRef(text));
        entry->key = key;
        entry->n = s.n;
    }
    return text;
}

/* -- value caches ------------------------------------------------------------------------ */

typedef struct {
    uint64_t key;
    PyObject *value; /* NULL: empty entry */
} Entry;

static Entry decimal_cache[1 << DECIMAL_CACHE_BITS];
static Entry date_cache[1 << DATE_CACHE_BITS];

static Entry *
cache_slot(Entry *table, int bits, uint64_t key)
{
    return &table[(key * 0x9E3779B97F4A7C15ULL) >> (64 - bits)];
}

static PyObject *
cache_put(Entry *entry, uint64_t key, PyObject *value)
{
    if (value != NULL) {
        Py_INCREF(value);
        Py_XSETREF(entry->value, value);
        entry->key = key;
    }
    return value;
}

/* -- direct Decimals ---------------------------------------------------------------------
 *
 * A Decimal was made by calling make_decimal with its text: two thirds of the parse time went
 * into that call (argument parsing, libmpdec's string conversion).  A value of at most
 * MAX_QUANTITY_DIGITS digits is fully described by sign, coefficient and exponent, so it is
 * built directly instead: allocated with the Decimal type's own allocator, its fields written
 * as _decimal's allocator and string conversion leave them (CPython Modules/_decimal:
 * PyDecObject holding libmpdec's mpd_t, the coefficient in the object's static data).
 * That layout is CPython's private one, so configure() first compares it, field by field,
 * with Decimals made by make_decimal, and keeps calling make_decimal if anything differs. */

#define DEC_MINALLOC 4

typedef struct {
    PyObject_HEAD
    Py_hash_t hash;
    MpdMirror dec;
    uint64_t data[DEC_MINALLOC];
} DecimalMirror;

/* The coefficient is one 64-bit word of libmpdec (base 10**19). */
_Static_assert(MAX_QUANTITY_DIGITS < 19, "a coefficient must fit one libmpdec word");

static PyTypeObject *decimal_type = NULL; /* NULL: every Decimal comes from make_decimal */

typedef struct {
    uint64_t coefficient;
    int fraction; /* digits after the point: the exponent is -fraction */
    int negative;
} DecimalParts;

/* An X12 R value: optional leading "-", digits with at most one ".", at least one digit,
 * at most max_digits digits (the reference's rule).  0 when the reference would reject it. */
static int
decimal_parts(Span s, int max_digits, DecimalParts *out)
{
    Py_ssize_t i = 0;
    uint64_t coefficient = 0;
    int digits = 0, fraction = 0, point = 0, negative = 0;
    if (s.n > 0 && s.p[0] == '-') {
        negative = 1;
        i = 1;
    }
    for (; i < s.n; i++) {
        char c = s.p[i];
        if (c >= '0' && c <= '9') {
            if (++digits > max_digits) {
                return 0;
            }
            coefficient = coefficient * 10 + (uint64_t)(c - '0');
            fraction += point;
        }
        else if (c == '.' && !point) {
            point = 1;
        }
        else {
            return 0;
        }
    }
    *out = (DecimalParts){coefficient, fraction, negative};
    return digits > 0;
}

static Py_ssize_t
digits_of(uint64_t coefficient)
{
    Py_ssize_t digits = 1;
    while (coefficient >= 10) {
        coefficient /= 10;
        digits++;
    }
    return digits;
}

/* The fields of the Decimal of parts, as _decimal sets them (not the object header). */
static void
fill_decimal(DecimalMirror *d, const DecimalParts *parts)
{
    d->hash = -1;
    d->dec.flags = MPD_STATIC | MPD_STATIC_DATA | (parts->negative ? MPD_NEG : 0);
    d->dec.exp = -(Py_ssize_t)parts->fraction;
    d->dec.digits = digits_of(parts->coefficient);
    d->dec.len = 1;
    d->dec.alloc = DEC_MINALLOC;
    d->dec.data = d->data;
    d->data[0] = parts->coefficient;
}

static PyObject *
new_decimal(Span s, const DecimalParts *parts)
{
    if (decimal_type == NULL) {
        PyObject *text = PyUnicode_DecodeLatin1(s.p, s.n, NULL); /* not str_of: no caching */
        if (text == NULL) {
            return NULL;
        }
        PyObject *value = PyObject_CallOneArg(make_decimal, text);
        Py_DECREF(text);
        return value;
    }
    PyObject *obj = decimal_type->tp_alloc(decimal_type, 0);
    if (obj != NULL) {
        fill_decimal((DecimalMirror *)obj, parts);
    }
    return obj;
}

/* Returns NULL without an exception when the reference parser would reject the value. */
#define BAIL NULL

/* The Decimal of an X12 R value (see decimal_parts).  Sign, coefficient and exponent
 * determine it, and make the cache key. */
static PyObject *
decimal_of(Span s, int max_digits)
{
    DecimalParts parts;
    if (!decimal_parts(s, max_digits, &parts)) {
        return BAIL;
    }
    /* coefficient < 10**15 < 2**50, fraction <= 15 */
    uint64_t key = (parts.coefficient << 5) | ((uint64_t)parts.fraction << 1) |
                   (uint64_t)parts.negative;
    Entry *entry = cache_slot(decimal_cache, DECIMAL_CACHE_BITS, key);
    if (entry->value != NULL && entry->key == key) {
        return Py_NewRef(entry->value);
    }
    return cache_put(entry, key, new_decimal(s, &parts));
}

/* 1 when the real Decimal ref has exactly the fields fill_decimal would give it. */
static int
same_fields(PyObject *ref, const DecimalParts *parts)
{
    DecimalMirror expected;
    fill_decimal(&expected, parts);
    const DecimalMirror *got = (const DecimalMirror *)ref;
    return got->hash == expected.hash && got->dec.flags == expected.dec.flags &&
           got->dec.exp == expected.dec.exp && got->dec.digits == expected.dec.digits &&
           got->dec.len == expected.dec.len && got->dec.alloc == expected.dec.alloc &&
           got->dec.data == got->data && got->data[0] == expected.data[0];
}

/* 1 when a directly built Decimal equals ref and prints the same (same exponent and sign). */
static int
same_value(PyObject *ref, const DecimalParts *parts)
{
    PyObject *built = decimal_type->tp_alloc(decimal_type, 0);
    if (built == NULL) {
        return -1;
    }
    fill_decimal((DecimalMirror *)built, parts);
    PyObject *text = PyObject_Str(built), *ref_text = PyObject_Str(ref);
    int same = -1;
    if (text != NULL && ref_text != NULL) {
        same = PyUnicode_Compare(text, ref_text) == 0 ? PyObject_RichCompareBool(built, ref, Py_EQ)
                                                      : 0;
    }
    Py_XDECREF(text);
    Py_XDECREF(ref_text);
    Py_DECREF(built);
    return same;
}

/* Check one probe text against make_decimal: 1 same, 0 different, -1 error. */
static int
check_probe(const char *probe)
{
    DecimalParts parts;
    if (!decimal_parts((Span){probe, (Py_ssize_t)strlen(probe)}, MAX_QUANTITY_DIGITS, &parts)) {
        return 0;
    }
    PyObject *ref = PyObject_CallFunction(make_decimal, "s", probe);
    if (ref == NULL) {
        return -1;
    }
    int same = 0;
    if (Py_TYPE(ref) == decimal_type && same_fields(ref, &parts)) {
        same = same_value(ref, &parts);
    }
    Py_DECREF(ref);
    return same;
}

/* Use direct Decimals when asked and the layout checks out: 1 in use, 0 not, -1 error. */
static int
configure_direct(int wanted)
{
    static const char *probes[] = {"0",   "-0.00", "7.50", "-12345678.90", "123456789012345",
                                   ".5",  "5.",    "-.5",  "1000000000"};
    Py_CLEAR(decimal_type);
    for (size_t i = 0; i < sizeof(decimal_cache) / sizeof(decimal_cache[0]); i++) {
        Py_CLEAR(decimal_cache[i].value);
    }
    if (!wanted) {
        return 0;
    }
    PyObject *zero = PyObject_CallFunction(make_decimal, "s", "0");
    if (zero == NULL) {
        return -1;
    }
    PyTypeObject *type = Py_TYPE(zero);
    Py_DECREF(zero);
    if (type->tp_basicsize != (Py_ssize_t)sizeof(DecimalMirror) || type->tp_itemsize != 0 ||
        PyType_IS_GC(type) || type->tp_alloc == NULL) {
        return 0;
    }
    decimal_type = (PyTypeObject *)Py_NewRef(type);
    for (size_t i = 0; i < sizeof(probes) / sizeof(probes[0]); i++) {
        int same = check_probe(probes[i]);
        if (same != 1) {
            Py_CLEAR(decimal_type);
            return same;
        }
    }
    return 1;
}

static int
days_in_month(int year, int month)
{
    static const int days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    return days[month - 1] + (month == 2 && leap);
}

/* A CCYYMMDD element: None when empty, BAIL when not a valid date. */
static PyObject *
date_of(Span s)
{
    if (s.n == 0) {
        Py_RETURN_NONE;
    }
    if (s.n != 8) {
        return BAIL;
    }
    int value = 0;
    for (int i = 0; i < 8; i++) {
        char c = s.p[i];
        if (c < '0' || c > '9') {
            return BAIL;
        }
        value = value * 10 + (c - '0');
    }
    int year = value / 10000, month = value / 100 % 100, day = value % 100;
    if (year < 1 || month < 1 || month > 12 || day < 1 || day > days_in_month(year, month)) {
        return BAIL;
    }
    Entry *entry = cache_slot(date_cache, DATE_CACHE_BITS, (uint64_t)value);
    if (entry->value != NULL && entry->key == (uint64_t)value) {
        return Py_NewRef(entry->value);
    }
    return cache_put(entry, (uint64_t)value, PyDate_FromDate(year, month, day));
}

/* configure(make_decimal, *classes, direct=True) -> whether Decimals are built directly. */
static PyObject *
configure(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *decimal, *classes[SHAPES];
    int direct = 1;
    if (!PyArg_ParseTuple(args, "OOOOO|p:configure", &decimal, &classes[0], &classes[1],
                          &classes[2], &classes[3], &direct)) {
        return NULL;
    }
    for (int i = 0; i < SHAPES; i++) {
        if (configure_shape(&shapes[i], classes[i], "_fast835") < 0) {
            return NULL;
        }
    }
    if (!PyCallable_Check(decimal)) {
        PyErr_SetString(PyExc_TypeError, "make_decimal must be callable");
        return NULL;
    }
    Py_INCREF(decimal);
    Py_XSETREF(make_decimal, decimal);
    int used = configure_direct(direct);
    return used < 0 ? NULL : PyBool_FromLong(used);
}

/* -- parser state ------------------------------------------------------------------------ */

enum { HEADER, PAYER, PAYEE, FOOTER };

typedef struct {
    PyObject *number, *procedure, *charge, *paid, *revenue, *units, *control, *service_date,
        *allowed, *adjustments;
} Line;

typedef struct {
    PyObject *number, *pcn, *status, *charge, *paid, *responsibility, *filing, *payer_claim,
        *facility, *frequency, *original, *date_from, *date_to, *adjustments, *lines;
} Claim;

/* Model objects collected for a tuple (cheaper than a list, then a tuple). */
typedef struct {
    PyObject **items;
    Py_ssize_t size, capacity;
} Stack;

typedef struct {
    Span *els; /* elements of the current segment */
    Py_ssize_t size, capacity;
    char component;
    int context;
    int in_claim, in_line;
    Claim claim;
    Line line;
    Stack line_adjustments, claim_adjustments, claim_lines, claims, plb;
    PyObject *control, *bpr, *trn, *total_paid, *effective, *production;
    PyObject *payer[4], *payee[4];
} Parser;

/* The array of item_size-byte items, grown to hold at least one more item (NULL on failure:
 * the array is then unchanged). */
static void *
grow(void *items, Py_ssize_t *capacity, size_t item_size)
{
    Py_ssize_t wanted = *capacity ? 2 * *capacity : 16;
    void *grown = NULL;
    if ((size_t)wanted <= PY_SSIZE_T_MAX / item_size) {
        grown = PyMem_Realloc(items, (size_t)wanted * item_size);
    }
    if (grown == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    *capacity = wanted;
    return grown;
}

/* Push a new reference (stolen, also on failure). */
static int
push(Stack *stack, PyObject *obj)
{
    if (obj == NULL) {
        return -1;
    }
    if (stack->size == stack->capacity) {
        PyObject **grown = grow(stack->items, &stack->capacity, sizeof(PyObject *));
        if (grown == NULL) {
            Py_DECREF(obj);
            return -1;
        }
        stack->items = grown;
    }
    stack->items[stack->size++] = obj;
    return 0;
}

/* The stacked model objects as a tuple, untracked like them (see build); empties the stack. */
static PyObject *
pop_tuple(Stack *stack)
{
    PyObject *tuple = PyTuple_New(stack->size);
    if (tuple == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < stack->size; i++) {
        PyTuple_SET_ITEM(tuple, i, stack->items[i]);
    }
    stack->size = 0;
    PyObject_GC_UnTrack(tuple);
    return tuple;
}

static void
clear_stack(Stack *stack)
{
    for (Py_ssize_t i = 0; i < stack->size; i++) {
        Py_DECREF(stack->items[i]);
    }
    PyMem_Free(stack->items);
}

static Span
el(const Parser *ps, Py_ssize_t i)
{
    return i < ps->size ? ps->els[i] : EMPTY;
}

#define LINE_FIELDS(l)                                                                   \
    {&(l)->number, &(l)->procedure, &(l)->charge, &(l)->paid, &(l)->revenue, &(l)->units, \
     &(l)->control, &(l)->service_date, &(l)->allowed, &(l)->adjustments}
#define CLAIM_FIELDS(c)                                                                   \
    {&(c)->number, &(c)->pcn, &(c)->status, &(c)->charge, &(c)->paid, &(c)->responsibility, \
     &(c)->filing, &(c)->payer_claim, &(c)->facility, &(c)->frequency, &(c)->original,      \
     &(c)->date_from, &(c)->date_to, &(c)->adjustments, &(c)->lines}

static void
clear_refs(PyObject ***refs, int n)
{
    for (int i = 0; i < n; i++) {
        Py_CLEAR(*refs[i]);
    }
}

static void
clear_line(Line *line)
{
    PyObject **refs[] = LINE_FIELDS(line);
    clear_refs(refs, 10);
}

static void
clear_claim(Claim *claim)
{
    PyObject **refs[] = CLAIM_FIELDS(claim);
    clear_refs(refs, 15);
}

static void
clear_parser(Parser *ps)
{
    clear_line(&ps->line);
    clear_claim(&ps->claim);
    Stack *stacks[] = {&ps->line_adjustments, &ps->claim_adjustments, &ps->claim_lines,
                       &ps->claims, &ps->plb};
    for (int i = 0; i < 5; i++) {
        clear_stack(stacks[i]);
    }
    PyObject **refs[] = {&ps->control,   &ps->bpr,       &ps->trn,       &ps->total_paid,
                         &ps->effective, &ps->production, &ps->payer[0], &ps->payer[1],
                         &ps->payer[2],  &ps->payer[3],  &ps->payee[0],  &ps->payee[1],
                         &ps->payee[2],  &ps->payee[3]};
    clear_refs(refs, 14);
    PyMem_Free(ps->els);
}

/* Replace *slot with value (a new reference); returns -1 when value is NULL. */
static int
set(PyObject **slot, PyObject *value)
{
    if (value == NULL) {
        return -1;
    }
    Py_XSETREF(*slot, value);
    return 0;
}

/* Append an element span to the current segment. */
static int
add_element(Parser *ps, const char *p, Py_ssize_t n)
{
    if (ps->size == ps->capacity) {
        Span *grown = grow(ps->els, &ps->capacity, sizeof(Span));
        if (grown == NULL) {
            return -1;
        }
        ps->els = grown;
    }
    ps->els[ps->size++] = (Span){p, n};
    return 0;
}

/* -- loops ------------------------------------------------------------------------------- */

static int
close_line(Parser *ps)
{
    Line *l = &ps->line;
    ps->in_line = 0;
    if ((l->adjustments = pop_tuple(&ps->line_adjustments)) == NULL) {
        return -1;
    }
    PyObject *values[] = {l->procedure, l->charge,       l->paid,    l->revenue,
                          l->units,     l->control,      l->service_date, l->allowed,
                          l->adjustments, l->number};
    memset(l, 0, sizeof(*l)); /* build() takes over every reference */
    return push(&ps->claim_lines, build(SERVICE_LINE, values));
}

static int
close_claim(Parser *ps)
{
    if (ps->in_line && close_line(ps) < 0) {
        return -1;
    }
    Claim *c = &ps->claim;
    ps->in_claim = 0;
    if ((c->adjustments = pop_tuple(&ps->claim_adjustments)) == NULL ||
        (c->lines = pop_tuple(&ps->claim_lines)) == NULL) {
        return -1;
    }
    PyObject *values[] = {c->pcn,       c->status,    c->charge,   c->paid,
                          c->responsibility, c->filing, c->payer_claim, c->facility,
                          c->frequency, c->original,  c->date_from, c->date_to,
                          c->adjustments, c->lines,   c->number};
    memset(c, 0, sizeof(*c));
    return push(&ps->claims, build(CLAIM_PAYMENT, values));
}

static int
open_claim(Parser *ps, long number)
{
    if (ps->size < 7) {
        return -1;
    }
    Claim *c = &ps->claim;
    ps->in_claim = 1;
    if ((c->number = PyLong_FromLong(number)) == NULL) {
        return -1;
    }
    if ((c->charge = decimal_of(el(ps, 3), MAX_AMOUNT_DIGITS)) == NULL ||
        (c->paid = decimal_of(el(ps, 4), MAX_AMOUNT_DIGITS)) == NULL) {
        return -1;
    }
    if (el(ps, 5).n == 0) {
        c->responsibility = Py_NewRef(Py_None);
    }
    else if ((c->responsibility = decimal_of(el(ps, 5), MAX_AMOUNT_DIGITS)) == NULL) {
        return -1;
    }
    PyObject **strings[] = {&c->pcn,         &c->status,   &c->filing,
                            &c->payer_claim, &c->facility, &c->frequency};
    const int index[] = {1, 2, 6, 7, 8, 9};
    for (int i = 0; i < 6; i++) {
        if ((*strings[i] = str_of(el(ps, index[i]))) == NULL) {
            return -1;
        }
    }
    c->original = Py_NewRef(Py_None);
    c->date_from = Py_NewRef(Py_None);
    c->date_to = Py_NewRef(Py_None);
    return 0;
}

/* SVC01 with the component separator normalised to ":". */
static PyObject *
procedure_of(Span s, char component)
{
    if (component == ':' || memchr(s.p, component, s.n) == NULL) {
        return str_of(s);
    }
    char *copy = PyMem_Malloc(s.n);
    if (copy == NULL) {
        return PyErr_NoMemory();
    }
    for (Py_ssize_t i = 0; i < s.n; i++) {
        copy[i] = s.p[i] == component ? ':' : s.p[i];
    }
    PyObject *text = PyUnicode_DecodeLatin1(copy, s.n, NULL);
    PyMem_Free(copy);
    return text;
}

static int
open_line(Parser *ps, long number)
{
    if (!ps->in_claim) {
        return -1;
    }
    if (ps->in_line && close_line(ps) < 0) {
        return -1;
    }
    if (ps->size < 4) {
        return -1;
    }
    Line *l = &ps->line;
    ps->in_line = 1;
    if ((l->number = PyLong_FromLong(number)) == NULL) {
        return -1;
    }
    if ((l->charge = decimal_of(el(ps, 2), MAX_AMOUNT_DIGITS)) == NULL ||
        (l->paid = decimal_of(el(ps, 3), MAX_AMOUNT_DIGITS)) == NULL) {
        return -1;
    }
    if (el(ps, 5).n == 0) {
        l->units = Py_NewRef(Py_None);
    }
    else if ((l->units = decimal_of(el(ps, 5), MAX_QUANTITY_DIGITS)) == NULL) {
        return -1;
    }
    if ((l->procedure = procedure_of(el(ps, 1), ps->component)) == NULL) {
        return -1;
    }
    if (el(ps, 4).n == 0) {
        l->revenue = Py_NewRef(Py_None);
    }
    else if ((l->revenue = str_of(el(ps, 4))) == NULL) {
        return -1;
    }
    l->control = Py_NewRef(Py_None);
    l->service_date = Py_NewRef(Py_None);
    l->allowed = Py_NewRef(Py_None);
    return 0;
}

static int
cas(Parser *ps, long number)
{
    Stack *out = ps->in_line    ? &ps->line_adjustments
                 : ps->in_claim ? &ps->claim_adjustments
                                : NULL;
    if (out == NULL) {
        return -1;
    }
    PyObject *group = NULL;
    for (int g = 0; g < 5; g++) {
        if (span_is(el(ps, 1), cas_group_names[g])) {
            group = cas_groups[g];
        }
    }
    if (group == NULL) {
        return -1;
    }
    PyObject *segment_number = PyLong_FromLong(number);
    if (segment_number == NULL) {
        return -1;
    }
    int rc = 0;
    for (Py_ssize_t k = 2; rc == 0 && k < ps->size; k += 3) {
        Span reason = el(ps, k), text = el(ps, k + 1), quantity = el(ps, k + 2);
        if (reason.n == 0) {
            if (text.n == 0) {
                continue;
            }
            rc = -1;
            break;
        }
        PyObject *values[5] = {Py_NewRef(group), str_of(reason), NULL, NULL,
                               Py_NewRef(segment_number)};
        values[3] = quantity.n ? decimal_of(quantity, MAX_QUANTITY_DIGITS) : Py_NewRef(Py_None);
        values[2] = decimal_of(text, MAX_AMOUNT_DIGITS);
        if (values[1] == NULL || values[2] == NULL || values[3] == NULL) {
            for (int i = 0; i < 5; i++) {
                Py_XDECREF(values[i]);
            }
            rc = -1;
            break;
        }
        rc = push(out, build(ADJUSTMENT, values));
    }
    Py_DECREF(segment_number);
    return rc;
}

static int
dtm(Parser *ps)
{
    Span qualifier = el(ps, 1);
    if (ps->in_line) {
        if (span_is(qualifier, "472") ||
            (span_is(qualifier, "150") && ps->line.service_date == Py_None)) {
            return set(&ps->line.service_date, date_of(el(ps, 2)));
        }
    }
    else if (ps->in_claim) {
        if (span_is(qualifier, "232")) {
            return set(&ps->claim.date_from, date_of(el(ps, 2)));
        }
        if (span_is(qualifier, "233")) {
            return set(&ps->claim.date_to, date_of(el(ps, 2)));
        }
    }
    else if (ps->size > 1 && span_is(qualifier, "405") && ps->context == HEADER) {
        return set(&ps->production, date_of(el(ps, 2)));
    }
    return 0;
}

static int
ref(Parser *ps)
{
    Span qualifier = el(ps, 1);
    if (ps->in_line) {
        if (span_is(qualifier, "6R")) {
            return set(&ps->line.control, str_of(el(ps, 2)));
        }
    }
    else if (ps->in_claim) {
        if (span_is(qualifier, "F8")) {
            return set(&ps->claim.original, str_of(el(ps, 2)));
        }
    }
    else if (ps->size > 1 && span_is(qualifier, "TJ") &&
             (ps->context == PAYER || ps->context == PAYEE)) {
        PyObject **party = ps->context == PAYER ? ps->payer : ps->payee;
        return set(&party[3], str_of(el(ps, 2)));
    }
    return 0;
}

/* -- rare segments ----------------------------------------------------------------------- */

static PyObject *
elements_list(const Parser *ps)
{
    PyObject *list = PyList_New(ps->size);
    for (Py_ssize_t i = 0; list != NULL && i < ps->size; i++) {
        PyObject *text = str_of(ps->els[i]);
        if (text == NULL) {
            Py_CLEAR(list);
        }
        else {
            PyList_SET_ITEM(list, i, text);
        }
    }
    return list;
}

static int
n1(Parser *ps)
{
    Span code = el(ps, 1);
    PyObject **party = NULL;
    if (span_is(code, "PR")) {
        party = ps->payer;
        ps->context = PAYER;
    }
    else if (span_is(code, "PE")) {
        party = ps->payee;
        ps->context = PAYEE;
    }
    else {
        ps->context = HEADER;
        return 0;
    }
    for (int i = 0; i < 3; i++) {
        if (set(&party[i], str_of(el(ps, i + 2))) < 0) {
            return -1;
        }
    }
    Py_XSETREF(party[3], Py_NewRef(Py_None));
    return 0;
}

static int
plb(Parser *ps, long number)
{
    ps->context = FOOTER;
    PyObject *period = date_of(el(ps, 2));
    if (period == NULL) {
        return -1;
    }
    PyObject *segment_number = PyLong_FromLong(number);
    if (segment_number == NULL) {
        Py_DECREF(period);
        return -1;
    }
    int rc = 0;
    for (Py_ssize_t k = 3; rc == 0 && k < ps->size; k += 2) {
        Span composite = el(ps, k), amount = el(ps, k + 1);
        if (composite.n == 0) {
            if (amount.n == 0) {
                continue;
            }
            rc = -1;
            break;
        }
        const char *cut = memchr(composite.p, ps->component, composite.n);
        Span reason = composite, reference = EMPTY;
        if (cut != NULL) {
            reason.n = cut - composite.p;
            reference = (Span){cut + 1, composite.n - reason.n - 1};
        }
        PyObject *values[6] = {str_of(el(ps, 1)), Py_NewRef(period), str_of(reason),
                               reference.n ? str_of(reference) : Py_NewRef(Py_None),
                               decimal_of(amount, MAX_AMOUNT_DIGITS), Py_NewRef(segment_number)};
        if (values[0] == NULL || values[2] == NULL || values[3] == NULL || values[4] == NULL) {
            for (int i = 0; i < 6; i++) {
                Py_XDECREF(values[i]);
            }
            rc = -1;
            break;
        }
        rc = push(&ps->plb, build(PROVIDER_ADJUSTMENT, values));
    }
    Py_DECREF(period);
    Py_DECREF(segment_number);
    return rc;
}

static int
rare(Parser *ps, Span sid, long number)
{
    int closes = span_is(sid, "LX") || span_is(sid, "N1") || span_is(sid, "PLB") ||
                 span_is(sid, "SE");
    if (closes && ps->in_claim && close_claim(ps) < 0) {
        return -1;
    }
    if (span_is(sid, "LX")) {
        ps->context = HEADER;
    }
    else if (span_is(sid, "SE")) {
        ps->context = FOOTER;
    }
    else if (span_is(sid, "N1")) {
        return n1(ps);
    }
    else if (span_is(sid, "PLB")) {
        return plb(ps, number);
    }
    else if (span_is(sid, "BPR")) {
        if (set(&ps->total_paid, decimal_of(el(ps, 2), MAX_AMOUNT_DIGITS)) < 0 ||
            set(&ps->effective, date_of(el(ps, 16))) < 0 || ps->size < 5) {
            return -1;
        }
        return set(&ps->bpr, elements_list(ps));
    }
    else if (span_is(sid, "TRN")) {
        return ps->size < 3 ? -1 : set(&ps->trn, elements_list(ps));
    }
    return 0;
}

static int
segment(Parser *ps, long number)
{
    Span sid = ps->els[0];
    if (span_is(sid, "CAS")) {
        return cas(ps, number);
    }
    if (span_is(sid, "DTM")) {
        return dtm(ps);
    }
    if (span_is(sid, "REF")) {
        return ref(ps);
    }
    if (span_is(sid, "SVC")) {
        return open_line(ps, number);
    }
    if (span_is(sid, "AMT")) {
        if (ps->in_line && ps->size > 1 && span_is(ps->els[1], "B6")) {
            return set(&ps->line.allowed, decimal_of(el(ps, 2), MAX_AMOUNT_DIGITS));
        }
        return 0;
    }
    if (span_is(sid, "CLP")) {
        if (ps->in_claim && close_claim(ps) < 0) {
            return -1;
        }
        return open_claim(ps, number);
    }
    return rare(ps, sid, number);
}

static int
st(Parser *ps)
{
    if (!span_is(ps->els[0], "ST") || ps->size < 2 || !span_is(ps->els[1], "835")) {
        return -1;
    }
    return set(&ps->control, str_of(el(ps, 2)));
}

/* -- driver ------------------------------------------------------------------------------ */

static int
is_newline(char c)
{
    return c == '\r' || c == '\n';
}

/* Tokenize (the reference tokenizer's rules: leading CR/LF of a piece is skipped, blank
 * pieces are not segments, text after the last terminator must be blank) and parse.
 * Skipping every CR, LF and terminator before a segment is exactly skipping blank pieces. */
static int
run(Parser *ps, const char *data, Py_ssize_t n, char elem, char term, long first,
    Py_ssize_t *count)
{
    Py_ssize_t pos = 0, segments = 0;
    for (;;) {
        while (pos < n && (data[pos] == term || is_newline(data[pos]))) {
            pos++;
        }
        if (pos == n) {
            break;
        }
        Py_ssize_t start = pos;
        ps->size = 0;
        while (pos < n && data[pos] != term) {
            if (data[pos] == elem) {
                if (add_element(ps, data + start, pos - start) < 0) {
                    return -1;
                }
                start = pos + 1;
            }
            pos++;
        }
        if (pos == n) {
            return -1; /* truncated: no terminator (the reference reports it) */
        }
        if (add_element(ps, data + start, pos - start) < 0) {
            return -1;
        }
        pos++;
        long number = first + (long)segments;
        if ((segments == 0 ? st(ps) : segment(ps, number)) < 0) {
            return -1;
        }
        segments++;
    }
    if (segments == 0 || ps->bpr == NULL || ps->trn == NULL) {
        return -1;
    }
    *count = segments;
    return ps->in_claim ? close_claim(ps) : 0;
}

static PyObject *
party_tuple(PyObject **party)
{
    return PyTuple_Pack(4, party[0], party[1], party[2], party[3]);
}

static PyObject *
result(Parser *ps, Py_ssize_t count)
{
    PyObject *payer = party_tuple(ps->payer), *payee = party_tuple(ps->payee);
    PyObject *claims = pop_tuple(&ps->claims), *plb = pop_tuple(&ps->plb);
    PyObject *out = NULL;
    if (payer != NULL && payee != NULL && claims != NULL && plb != NULL) {
        out = Py_BuildValue("(OOOOOOOOOOn)", ps->control, ps->bpr, ps->trn, ps->total_paid,
                            ps->effective, ps->production, payer, payee, claims, plb, count);
    }
    Py_XDECREF(payer);
    Py_XDECREF(payee);
    Py_XDECREF(claims);
    Py_XDECREF(plb);
    return out;
}

static PyObject *
parse(PyObject *Py_UNUSED(module), PyObject *args)
{
    const char *data;
    Py_ssize_t n;
    int elem, component, term, overflow;
    PyObject *first_segment;
    if (!PyArg_ParseTuple(args, "y#CCCO!:parse", &data, &n, &elem, &component, &term,
                          &PyLong_Type, &first_segment)) {
        return NULL;
    }
    long first = PyLong_AsLongAndOverflow(first_segment, &overflow);
    if (first == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (make_decimal == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "_fast835.configure() was not called");
        return NULL;
    }
    /* Delimiters are latin-1 characters; segment numbers first..first+n must fit a long. */
    if (elem > 255 || component > 255 || term > 255 || overflow || first > LONG_MAX - n) {
        Py_RETURN_NONE;
    }
    Parser ps;
    memset(&ps, 0, sizeof(ps));
    ps.component = (char)component;
    ps.context = HEADER;
    for (int i = 0; i < 3; i++) {
        ps.payer[i] = PyUnicode_New(0, 0);
        ps.payee[i] = PyUnicode_New(0, 0);
    }
    ps.payer[3] = Py_NewRef(Py_None);
    ps.payee[3] = Py_NewRef(Py_None);
    ps.effective = Py_NewRef(Py_None);
    ps.production = Py_NewRef(Py_None);
    Py_ssize_t count = 0;
    PyObject *out = NULL;
    int ready = 1;
    for (int i = 0; i < 4; i++) {
        ready = ready && ps.payer[i] != NULL && ps.payee[i] != NULL;
    }
    if (ready &&
        run(&ps, data, n, (char)elem, (char)term, first, &count) == 0) {
        out = result(&ps, count);
    }
    clear_parser(&ps);
    if (out == NULL && !PyErr_Occurred()) {
        Py_RETURN_NONE; /* the reference parser decides (and names the error) */
    }
    return out;
}

/* -- balance pre-check -------------------------------------------------------------------
 *
 * balance._check_claim's conditions over parsed claims, in exact integer arithmetic: an
 * amount is a Decimal read through the layout configure() verified, scaled to millionths.
 * The answer is only ever "nothing to report" (1) or "let the Python check decide" (0): any
 * value this code does not read exactly (another type, a special or long Decimal, more than
 * six decimals, an overflow) gives 0, and so does anything _check_claim would report. */

#define MONEY_DECIMALS 6
enum { GROUP_PR = 1, GROUP_CR = 4 }; /* indexes in cas_groups */

/* The slot field of a model object of exact shape which (NULL: another object or unset). */
static PyObject *
slot_of(PyObject *obj, int which, int field)
{
    Shape *shape = &shapes[which];
    if (shape->type == NULL || Py_TYPE(obj) != shape->type) {
        return NULL;
    }
    return *(PyObject **)((char *)obj + shape->offsets[field]);
}

/* 1 and *out = value * 10**MONEY_DECIMALS when value is a Decimal read exactly, else 0. */
static int
money_of(PyObject *value, int64_t *out)
{
    static const int64_t scale[MONEY_DECIMALS + 1] = {1000000, 100000, 10000, 1000, 100, 10, 1};
    if (value == NULL || decimal_type == NULL || Py_TYPE(value) != decimal_type) {
        return 0;
    }
    const MpdMirror *dec = &((const DecimalMirror *)value)->dec;
    if ((dec->flags & ~(MPD_NEG | MPD_STATIC | MPD_STATIC_DATA)) != 0 || dec->len != 1 ||
        dec->exp > 0 || dec->exp < -MONEY_DECIMALS || dec->data[0] > (uint64_t)INT64_MAX) {
        return 0;
    }
    int64_t amount;
    if (__builtin_mul_overflow((int64_t)dec->data[0], scale[-dec->exp], &amount)) {
        return 0;
    }
    *out = dec->flags & MPD_NEG ? -amount : amount;
    return 1;
}

static int
is_group(PyObject *group, int g)
{
    return group == cas_groups[g] ||
           (PyUnicode_Check(group) &&
            PyUnicode_CompareWithASCIIString(group, cas_group_names[g]) == 0);
}

/* Adds a tuple of adjustments to *adjusted and its PR ones to *patient; 0 on a CR group. */
static int
add_adjustments(PyObject *adjustments, int64_t *adjusted, int64_t *patient)
{
    if (adjustments == NULL || !PyTuple_CheckExact(adjustments)) {
        return 0;
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(adjustments); i++) {
        PyObject *adjustment = PyTuple_GET_ITEM(adjustments, i);
        PyObject *group = slot_of(adjustment, ADJUSTMENT, 0);
        int64_t amount;
        if (group == NULL || is_group(group, GROUP_CR) ||
            !money_of(slot_of(adjustment, ADJUSTMENT, 2), &amount) ||
            __builtin_add_overflow(*adjusted, amount, adjusted) ||
            (is_group(group, GROUP_PR) && __builtin_add_overflow(*patient, amount, patient))) {
            return 0;
        }
    }
    return 1;
}

/* 1 when CHARGE - adjusted == paid, both read exactly. */
static int
balances(PyObject *charge, int64_t adjusted, PyObject *paid)
{
    int64_t c, p, rest;
    return money_of(charge, &c) && money_of(paid, &p) &&
           !__builtin_sub_overflow(c, adjusted, &rest) && rest == p;
}

/* 1 when the line balances and has no CR group; its sums are added to the claim's. */
static int
line_clean(PyObject *line, int64_t *adjusted, int64_t *patient)
{
    int64_t line_adjusted = 0;
    return add_adjustments(slot_of(line, SERVICE_LINE, 8), &line_adjusted, patient) &&
           balances(slot_of(line, SERVICE_LINE, 1), line_adjusted,
                    slot_of(line, SERVICE_LINE, 2)) &&
           !__builtin_add_overflow(*adjusted, line_adjusted, adjusted);
}

/* 1 when balance._check_claim has nothing to report on claim, 0 when it may, -1 error. */
static int
claim_clean(PyObject *claim, PyObject *valid_status)
{
    PyObject *status = slot_of(claim, CLAIM_PAYMENT, 1);
    PyObject *lines = slot_of(claim, CLAIM_PAYMENT, 13);
    PyObject *responsibility = slot_of(claim, CLAIM_PAYMENT, 4);
    if (status == NULL || lines == NULL || !PyTuple_CheckExact(lines) || responsibility == NULL) {
        return 0;
    }
    int valid = PySet_Contains(valid_status, status);
    if (valid != 1) {
        return valid;
    }
    int64_t adjusted = 0, patient = 0, expected;
    if (!add_adjustments(slot_of(claim, CLAIM_PAYMENT, 12), &adjusted, &patient)) {
        return 0;
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(lines); i++) {
        if (!line_clean(PyTuple_GET_ITEM(lines, i), &adjusted, &patient)) {
            return 0;
        }
    }
    if (!balances(slot_of(claim, CLAIM_PAYMENT, 2), adjusted, slot_of(claim, CLAIM_PAYMENT, 3))) {
        return 0;
    }
    return responsibility == Py_None || (money_of(responsibility, &expected) && expected == patient);
}

static PyObject *
claims_clean(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *claims, *valid_status;
    if (!PyArg_ParseTuple(args, "O!O!:claims_clean", &PyTuple_Type, &claims, &PyFrozenSet_Type,
                          &valid_status)) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(claims); i++) {
        int clean = claim_clean(PyTuple_GET_ITEM(claims, i), valid_status);
        if (clean < 0) {
            return NULL;
        }
        if (!clean) {
            Py_RETURN_FALSE;
        }
    }
    Py_RETURN_TRUE;
}

/* -- tokenizer helper -------------------------------------------------------------------- */

/* What tokenizer._separator_after needs to know about a buffer, found in one pass. */
typedef struct {
    Py_ssize_t newlines, returns, terms, term_lf, term_crlf;
    int double_term, double_term_lf, double_term_crlf;
} Separators;

/* Character i of the str, or -1 past its end. */
static inline long long
char_at(const void *data, int kind, Py_ssize_t n, Py_ssize_t i)
{
    return i < n ? (long long)PyUnicode_READ(kind, data, i) : -1;
}

/* Inlined with a constant kind in separator_after, so each kind gets its own loop. */
static inline void
count_separators(const void *data, int kind, Py_ssize_t n, long long term, Separators *out)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        long long c = PyUnicode_READ(kind, data, i);
        if (c == '\n') {
            out->newlines++;
        }
        else if (c == '\r') {
            out->returns++;
        }
        else if (c == term) {
            out->terms++;
            long long next = char_at(data, kind, n, i + 1);
            out->double_term |= next == term;
            if (next == '\n') {
                out->term_lf++;
                out->double_term_lf |= char_at(data, kind, n, i + 2) == term &&
                                       char_at(data, kind, n, i + 3) == '\n';
            }
            else if (next == '\r' && char_at(data, kind, n, i + 2) == '\n') {
                out->term_crlf++;
                out->double_term_crlf |= char_at(data, kind, n, i + 3) == term &&
                                         char_at(data, kind, n, i + 4) == '\r' &&
                                         char_at(data, kind, n, i + 5) == '\n';
            }
        }
    }
}

/* tokenizer._python_separator_after in one pass: what follows every terminator of buf
 * ("~", "~\n" or "~\r\n" for term "~"), or None.  term is one character, not CR or LF. */
static PyObject *
separator_after(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *buf, *term_str;
    if (!PyArg_ParseTuple(args, "UU:separator_after", &buf, &term_str)) {
        return NULL;
    }
    if (PyUnicode_READY(buf) < 0 || PyUnicode_READY(term_str) < 0) {
        return NULL;
    }
    if (PyUnicode_GET_LENGTH(term_str) != 1) {
        PyErr_SetString(PyExc_ValueError, "the terminator must be one character");
        return NULL;
    }
    long long term = PyUnicode_READ_CHAR(term_str, 0);
    if (term == '\r' || term == '\n') {
        PyErr_SetString(PyExc_ValueError, "the terminator must not be CR or LF");
        return NULL;
    }
    const void *data = PyUnicode_DATA(buf);
    Py_ssize_t n = PyUnicode_GET_LENGTH(buf);
    Separators c = {0};
    switch (PyUnicode_KIND(buf)) {
    case PyUnicode_1BYTE_KIND:
        count_separators(data, PyUnicode_1BYTE_KIND, n, term, &c);
        break;
    case PyUnicode_2BYTE_KIND:
        count_separators(data, PyUnicode_2BYTE_KIND, n, term, &c);
        break;
    default:
        count_separators(data, PyUnicode_4BYTE_KIND, n, term, &c);
    }
    const char *suffix;
    int doubled;
    if (c.newlines == 0 && c.returns == 0) {
        suffix = "";
        doubled = c.double_term;
    }
    else if (c.returns == 0 && c.term_lf == c.newlines) {
        suffix = "\n";
        doubled = c.double_term_lf;
    }
    else if (c.returns == c.newlines && c.term_crlf == c.newlines) {
        suffix = "\r\n";
        doubled = c.double_term_crlf;
    }
    else {
        Py_RETURN_NONE;
    }
    long long last = char_at(data, PyUnicode_KIND(buf), n, n - 1);
    int dangling = n > 0 && (last == term || (last == '\r' && n > 1 &&
                                              char_at(data, PyUnicode_KIND(buf), n, n - 2) == term));
    if ((*suffix && c.terms != c.newlines + dangling) || doubled ||
        (n > 0 && char_at(data, PyUnicode_KIND(buf), n, 0) == term)) {
        Py_RETURN_NONE;
    }
    PyObject *tail = PyUnicode_FromString(suffix);
    if (tail == NULL) {
        return NULL;
    }
    PyObject *sep = PyUnicode_Concat(term_str, tail);
    Py_DECREF(tail);
    return sep;
}

static PyMethodDef methods[] = {
    {"configure", configure, METH_VARARGS,
     "configure(make_decimal, adjustment, service_line, claim_payment, provider_adjustment, "
     "direct=True) -> bool (Decimals built directly)"},
    {"parse", parse, METH_VARARGS,
     "parse(data, element, component, segment, first_segment) -> tuple | None"},
    {"claims_clean", claims_clean, METH_VARARGS,
     "claims_clean(claims, valid_status) -> bool (True: balance._check_claim reports nothing)"},
    {"separator_after", separator_after, METH_VARARGS,
     "separator_after(buf, term) -> str | None (tokenizer._python_separator_after)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    .m_base = PyModuleDef_HEAD_INIT,
    .m_name = "_fast835",
    .m_doc = "C fast path of the 835 parser.",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC
PyInit__fast835(void)
{
    PyDateTime_IMPORT;
    if (PyDateTimeAPI == NULL) {
        return NULL;
    }
    for (int g = 0; g < 5; g++) {
        if (cas_groups[g] == NULL &&
            (cas_groups[g] = PyUnicode_InternFromString(cas_group_names[g])) == NULL) {
            return NULL;
        }
    }
    return PyModule_Create(&module_def);
}
