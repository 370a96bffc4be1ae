/* The codec's check that a document holds only plain JSON types, in one C walk.
 *
 * ``is_plain(value)`` is True when ``value`` is, all the way down, exactly a str, int, bool,
 * None or decimal.Decimal, or a list or a dict with str keys of such values: what msgspec's
 * encoder writes the same way as ``codec.plain`` and the standard library do (a Decimal as
 * its string). Anything else (a float, a tuple, a subclass, a key that is not exactly a str,
 * nesting deeper than MAX_DEPTH) makes it False, and the codec takes its standard path,
 * which refuses floats and unknown types. It is the same answer as ``codec._fast_ok``, the
 * pure Python reference (tests/store/test_store_codec_fast.py checks both on the same
 * values), at a few nanoseconds per value instead of tens: the walk of the event data of
 * a normalise job (tens of thousands of values) was most of that job's encoding time.
 *
 * Memory safety: the walk only reads types. It calls no Python code (no __eq__, __hash__
 * or __len__ of the values), so nothing can change a dict or list while it is walked and
 * the borrowed references of PyDict_Next and PyList_GET_ITEM stay valid; it allocates
 * nothing. Recursion stops at MAX_DEPTH, so the C stack is bounded.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#define MAX_DEPTH 64

static PyTypeObject *decimal_type; /* decimal.Decimal, set when the module loads */

static inline int scalar(PyObject *value) {
    PyTypeObject *type = Py_TYPE(value);
    return type == &PyUnicode_Type || type == &PyLong_Type || value == Py_None ||
           type == &PyBool_Type || type == decimal_type;
}

static int plain(PyObject *value, int depth) {
    if (scalar(value)) {
        return 1;
    }
    if (depth >= MAX_DEPTH) {
        return 0;
    }
    if (PyDict_CheckExact(value)) {
        Py_ssize_t position = 0;
        PyObject *key, *item;
        while (PyDict_Next(value, &position, &key, &item)) {
            if (!PyUnicode_CheckExact(key) || !(scalar(item) || plain(item, depth + 1))) {
                return 0;
            }
        }
        return 1;
    }
    if (PyList_CheckExact(value)) {
        for (Py_ssize_t n = 0; n < PyList_GET_SIZE(value); n++) {
            PyObject *item = PyList_GET_ITEM(value, n);
            if (!(scalar(item) || plain(item, depth + 1))) {
                return 0;
            }
        }
        return 1;
    }
    return 0;
}

static PyObject *is_plain(PyObject *Py_UNUSED(module), PyObject *value) {
    return PyBool_FromLong(plain(value, 0));
}

static PyMethodDef methods[] = {
    {"is_plain", is_plain, METH_O,
     "is_plain(value, /)\n--\n\nWhether value holds only plain JSON types (see the module)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_plain_json", "The codec's plain JSON check in C.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__plain_json(void) {
    PyObject *decimal = PyImport_ImportModule("decimal");
    if (decimal == NULL) {
        return NULL;
    }
    PyObject *type = PyObject_GetAttrString(decimal, "Decimal");
    Py_DECREF(decimal);
    if (type == NULL) {
        return NULL;
    }
    if (!PyType_Check(type)) {
        Py_DECREF(type);
        PyErr_SetString(PyExc_TypeError, "decimal.Decimal is not a type");
        return NULL;
    }
    decimal_type = (PyTypeObject *)type; /* kept for the life of the process */
    return PyModule_Create(&module);
}
