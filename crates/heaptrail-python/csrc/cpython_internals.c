/*
 * Private struct access for the holder analysis (src/python_api/holders.rs), which runs in a forked child
 * that holds the GIL and runs no Python code: a container's internal storage blocks (a dict's
 * key table and values array, a list's item array, a set's hash table, a deque's blocks, an
 * instance's values array), and the local variables of interpreter frames (a thread's stack, a frame object).
 *
 * Compiled against the exact headers of the interpreter the extension is built for, like
 * cpython_frames.c (which the allocator hooks use; this file is kept apart from it).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <frameobject.h>
#include <stdint.h>

#define Py_BUILD_CORE 1
#include "internal/pycore_frame.h"
#undef Py_BUILD_CORE

#if PY_VERSION_HEX >= 0x030D0000
/* The head of 3.13's `struct _dictvalues` (internal/pycore_dict.h, which needs more of the
   internal headers than an extension can include). */
typedef struct {
    uint8_t capacity;
    uint8_t size;
    uint8_t embedded;
    uint8_t valid;
} ht_dictvalues_head;
#endif

#if PY_VERSION_HEX < 0x030B0000 || PY_VERSION_HEX >= 0x030E0000
#error "heaptrail reads private structures of CPython 3.11, 3.12 and 3.13 only"
#endif

/* The block a dict values array lives in, or 0 when it has none of its own. 3.11/3.12: the
   array is preceded by a prefix (insertion order, used size) whose size is the byte just
   before it (dictobject.c: new_values / free_values). 3.13: the struct starts the block,
   unless it is embedded in its object. */
static uintptr_t
ht_values_block(PyDictValues *values)
{
    if (values == NULL) {
        return 0;
    }
#if PY_VERSION_HEX >= 0x030D0000
    if (((ht_dictvalues_head *)values)->embedded) {
        return 0;
    }
    return (uintptr_t)values;
#else
    uint8_t prefix = ((uint8_t *)values)[-1];
    return (uintptr_t)values - prefix;
#endif
}

/* A dict's storage: out[0] its key table (only for a combined table: a split table's keys are
   shared with the class), out[1] its values array (split tables). 0 where none. */
void
ht_dict_storage(PyObject *op, uintptr_t out[2])
{
    PyDictObject *d = (PyDictObject *)op;
    out[0] = 0;
    out[1] = 0;
    if (d->ma_values == NULL) {
        out[0] = (uintptr_t)d->ma_keys; /* the static empty table is never a traced block */
    } else {
        out[1] = ht_values_block(d->ma_values);
    }
}

uintptr_t
ht_list_storage(PyObject *op)
{
    return (uintptr_t)((PyListObject *)op)->ob_item;
}

/* The head of a `collections.deque` and its blocks (Modules/_collectionsmodule.c, the same in
   3.11, 3.12 and 3.13): the object starts with leftblock and rightblock after its var header;
   a block is {leftlink, data[64], rightlink}; the chain runs from leftblock through rightlink to
   rightblock (whose rightlink is not cleared in release builds: never followed). */
#define HT_DEQUE_BLOCKLEN 64
typedef struct ht_deque_block {
    struct ht_deque_block *leftlink;
    PyObject *data[HT_DEQUE_BLOCKLEN];
    struct ht_deque_block *rightlink;
} ht_deque_block;

typedef struct {
    PyObject_VAR_HEAD
    ht_deque_block *leftblock;
    ht_deque_block *rightblock;
} ht_deque_head;

/* Writes the addresses of a deque's blocks (its storage, PyMem_Malloc'd at the line that grew
   it) into out, at most cap of them; returns how many. `op` must be a collections.deque (or a
   subclass). A deque of n items has at most n / 64 + 2 blocks: the walk never goes further. */
size_t
ht_deque_blocks(PyObject *op, uintptr_t *out, size_t cap)
{
    ht_deque_head *d = (ht_deque_head *)op;
    ht_deque_block *b = d->leftblock;
    size_t limit = (size_t)Py_SIZE(op) / HT_DEQUE_BLOCKLEN + 2;
    size_t n = 0;
    while (b != NULL && n < cap && n < limit) {
        out[n++] = (uintptr_t)b;
        if (b == d->rightblock) {
            break;
        }
        b = b->rightlink;
    }
    return n;
}

uintptr_t
ht_set_storage(PyObject *op)
{
    PySetObject *s = (PySetObject *)op;
    return s->table == s->smalltable ? 0 : (uintptr_t)s->table;
}

uintptr_t
ht_bytearray_storage(PyObject *op)
{
    return (uintptr_t)((PyByteArrayObject *)op)->ob_bytes;
}

/* An instance's own values array (3.11/3.12 objects whose attributes live in a values array
   instead of a dict; 3.13 embeds it in the object). */
uintptr_t
ht_instance_values_storage(PyObject *op)
{
#if PY_VERSION_HEX >= 0x030D0000
    (void)op;
    return 0;
#elif PY_VERSION_HEX >= 0x030C0000
    if (!PyType_HasFeature(Py_TYPE(op), Py_TPFLAGS_MANAGED_DICT)) {
        return 0;
    }
    /* _PyObject_DictOrValuesPointer: 3 words before the object; low bit set: values, stored
       as `values - 1` (internal/pycore_object.h, _PyDictOrValues_GetValues). */
    uintptr_t dorv = ((uintptr_t *)op)[-3];
    if ((dorv & 1) == 0) {
        return 0;
    }
    return ht_values_block((PyDictValues *)(dorv + 1));
#else
    if (!PyType_HasFeature(Py_TYPE(op), Py_TPFLAGS_MANAGED_DICT)) {
        return 0;
    }
    /* _PyObject_ValuesPointer: 4 words before the object. */
    return ht_values_block(((PyDictValues **)op)[-4]);
#endif
}

/* ---- frames ------------------------------------------------------------------------------ */

#include "cpython_frame_access.h"

/* Called for each local variable: (ctx, code, line, name, value). A cell's contents are
   passed instead of the cell. */
typedef void (*ht_local_cb)(void *ctx, PyCodeObject *code, int line, PyObject *name,
                            PyObject *value);

static void
ht_frame_locals(_PyInterpreterFrame *f, ht_local_cb cb, void *ctx)
{
    if (!HT_FRAME_IS_CODE(f)) {
        return;
    }
    PyCodeObject *code = HT_FRAME_CODE(f);
    int line = PyCode_Addr2Line(code, _PyInterpreterFrame_LASTI(f) * (int)sizeof(_Py_CODEUNIT));
    PyObject *names = code->co_localsplusnames;
    Py_ssize_t n = code->co_nlocalsplus;
    for (Py_ssize_t i = 0; i < n && i < PyTuple_GET_SIZE(names); i++) {
        PyObject *value = f->localsplus[i];
        if (value == NULL) {
            continue;
        }
        if (PyCell_Check(value)) {
            value = PyCell_GET(value);
            if (value == NULL) {
                continue;
            }
        }
        cb(ctx, code, line, PyTuple_GET_ITEM(names, i), value);
    }
}

/* The local variables of every complete frame of `tstate`'s stack, innermost first. */
void
ht_thread_locals(PyThreadState *tstate, ht_local_cb cb, void *ctx)
{
    for (_PyInterpreterFrame *f = ht_top_frame(tstate); f != NULL; f = f->previous) {
        if (_PyFrame_IsIncomplete(f)) {
            continue;
        }
        ht_frame_locals(f, cb, ctx);
    }
}

/* The code of the bottom (outermost) complete frame of `tstate`, or NULL. */
PyCodeObject *
ht_thread_bottom_code(PyThreadState *tstate)
{
    PyCodeObject *code = NULL;
    for (_PyInterpreterFrame *f = ht_top_frame(tstate); f != NULL; f = f->previous) {
        if (!_PyFrame_IsIncomplete(f) && HT_FRAME_IS_CODE(f)) {
            code = HT_FRAME_CODE(f);
        }
    }
    return code;
}

unsigned long
ht_thread_ident(PyThreadState *tstate)
{
    return tstate->thread_id;
}

/* The local variables of a frame object (a traceback's frame, a generator's frame). */
void
ht_frame_object_locals(PyObject *frame, ht_local_cb cb, void *ctx)
{
    _PyInterpreterFrame *f = ((PyFrameObject *)frame)->f_frame;
    if (f != NULL) {
        ht_frame_locals(f, cb, ctx);
    }
}

PyObject *
ht_code_qualname(PyCodeObject *code)
{
    return code->co_qualname;
}

PyObject *
ht_code_filename_object(PyCodeObject *code)
{
    return code->co_filename;
}

/* The name of free variable `i` (closure cell i), borrowed, or NULL. Free variables are the
   last co_nfreevars names of co_localsplusnames (no new tuple, unlike PyCode_GetFreevars). */
PyObject *
ht_code_freevar(PyCodeObject *code, Py_ssize_t i)
{
    Py_ssize_t first = code->co_nlocalsplus - code->co_nfreevars;
    if (i < 0 || i >= code->co_nfreevars || first + i >= PyTuple_GET_SIZE(code->co_localsplusnames)) {
        return NULL;
    }
    return PyTuple_GET_ITEM(code->co_localsplusnames, first + i);
}

/* A traceback's frame and next link. */
PyObject *
ht_tb_frame(PyObject *tb)
{
    return (PyObject *)((PyTracebackObject *)tb)->tb_frame;
}

PyObject *
ht_tb_next(PyObject *tb)
{
    return (PyObject *)((PyTracebackObject *)tb)->tb_next;
}

/* A heap type's qualified name (borrowed), or NULL for a static type. */
PyObject *
ht_heap_type_qualname(PyTypeObject *tp)
{
    if (!(tp->tp_flags & Py_TPFLAGS_HEAPTYPE)) {
        return NULL;
    }
    return ((PyHeapTypeObject *)tp)->ht_qualname;
}

/* A module object's dict (borrowed). */
PyObject *
ht_module_dict(PyObject *module)
{
    return PyModule_GetDict(module);
}

/* A cell's contents (borrowed), or NULL. */
PyObject *
ht_cell_get(PyObject *cell)
{
    return PyCell_GET(cell);
}
