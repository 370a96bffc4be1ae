/* Slot shapes: reading and filling the slots of frozen slots dataclasses from C.
 *
 * Shared by the C fast paths (formats/x12/_fast835.c, normalise/_fast_x12_835.c).  A shape
 * names a class's fields; configure_shape looks up each field's member descriptor and keeps
 * its offset, so a value is read or stored with one pointer access.  A shape the module
 * builds instances of ("built") must list every slot, in declaration order, and its class
 * must not have a __post_init__ (it would not run): filling the slots is then exactly what
 * the class's __init__ would store.
 */
#ifndef REVBRIDGE_SLOT_SHAPES_H
#define REVBRIDGE_SLOT_SHAPES_H

#include <Python.h>
#include <stdint.h>
#include <structmember.h>

#define MAX_FIELDS 16

typedef struct {
    const char *name;
    int size;
    int built; /* 1: built by the module, so every slot is listed (in declaration order) */
    const char *fields[MAX_FIELDS];
    PyTypeObject *type;
    Py_ssize_t offsets[MAX_FIELDS];
} Shape;

/* Whether a class the module builds has exactly the shape's slots and no __post_init__:
 * 0 yes, -1 no (with an exception naming the module). */
static int
check_built_shape(const Shape *shape, PyObject *cls, const char *module)
{
    PyObject *slots = PyObject_GetAttrString(cls, "__slots__");
    if (slots == NULL) {
        return -1;
    }
    Py_ssize_t nslots = PyObject_Length(slots);
    Py_DECREF(slots);
    if (nslots != shape->size) {
        if (!PyErr_Occurred()) {
            PyErr_Format(PyExc_TypeError, "%s has %zd slots, %s expects %d", shape->name, nslots,
                         module, shape->size);
        }
        return -1;
    }
    if (PyObject_HasAttrString(cls, "__post_init__")) {
        PyErr_Format(PyExc_TypeError, "%s has __post_init__: %s cannot build it", shape->name,
                     module);
        return -1;
    }
    return 0;
}

/* The offset of every field of the shape in cls (a plain, writable object slot of cls
 * itself), and cls as the shape's type: 0, or -1 with an exception. */
static int
configure_shape(Shape *shape, PyObject *cls, const char *module)
{
    if (!PyType_Check(cls)) {
        PyErr_Format(PyExc_TypeError, "%s: expected a class", shape->name);
        return -1;
    }
    PyTypeObject *type = (PyTypeObject *)cls;
    if (shape->built && check_built_shape(shape, cls, module) < 0) {
        return -1;
    }
    for (int i = 0; i < shape->size; i++) {
        PyObject *descr = PyDict_GetItemString(type->tp_dict, shape->fields[i]);
        if (descr == NULL || !Py_IS_TYPE(descr, &PyMemberDescr_Type)) {
            PyErr_Format(PyExc_TypeError, "%s.%s is not a slot", shape->name, shape->fields[i]);
            return -1;
        }
        PyMemberDef *member = ((PyMemberDescrObject *)descr)->d_member;
        if (((PyDescrObject *)descr)->d_type != type || member->type != T_OBJECT_EX ||
            (member->flags & READONLY) || member->offset < (Py_ssize_t)sizeof(PyObject) ||
            member->offset + (Py_ssize_t)sizeof(PyObject *) > type->tp_basicsize) {
            PyErr_Format(PyExc_TypeError, "%s.%s is not a plain object slot", shape->name,
                         shape->fields[i]);
            return -1;
        }
        shape->offsets[i] = member->offset;
    }
    Py_INCREF(cls);
    Py_XSETREF(shape->type, type);
    return 0;
}

/* -- libmpdec's mpd_t as _decimal lays it out (CPython's private layout) -----------------
 *
 * Both fast paths read or write Decimals through this mirror; each compares it with real
 * Decimals in its configure() and does without it when anything differs. */

#define MPD_NEG 1
#define MPD_SPECIAL (2 | 4 | 8) /* infinity, NaN, sNaN */
#define MPD_STATIC 16
#define MPD_STATIC_DATA 32

typedef struct {
    uint8_t flags;
    Py_ssize_t exp, digits, len, alloc;
    uint64_t *data;
} MpdMirror;

#endif
