/*
 * CPython 3.11 and 3.12: keep dict, list and tuple objects out of their free lists while
 * heaptrail traces, so that every new one is allocated (and stamped with its creation line)
 * instead of silently reusing the block, and the traceback, of an object freed earlier.
 * (3.13 needs none of this: its reference tracer reports each new object; see
 * cpython_frames.c.)
 *
 * How. The deallocators push an object to the free list only when its type is *exactly* the
 * builtin type; otherwise they call tp_free. Checked in the 3.11 and 3.12 sources:
 *   dict_dealloc      `Py_IS_TYPE(mp, &PyDict_Type)`               else Py_TYPE(mp)->tp_free
 *   list_dealloc      `PyList_CheckExact(op)`                      else Py_TYPE(op)->tp_free
 *   tupledealloc      maybe_freelist_push: `Py_IS_TYPE(op, &PyTuple_Type)`, else tp_free
 * While tracing, the builtin types' tp_dealloc is a wrapper that, for an object of exactly
 * that type, first sets the object's type to a *clone* of it (a static copy: same flags and
 * tp_free, tp_dealloc = the original deallocator) and then calls the original. The object is
 * unreachable by then (refcount 0), so nothing can observe the borrowed type; its memory goes
 * back through tp_free (PyObject_GC_Del) to the allocator, where heaptrail's hook sees it go.
 *
 * Why the clone keeps CPython's invariants:
 *  - trashcan: Py_TRASHCAN_BEGIN(op, dict_dealloc) applies only if
 *    `Py_TYPE(op)->tp_dealloc == dict_dealloc` (_PyTrash_cond). The clone's tp_dealloc is the
 *    original, so deep nests of dicts/lists/tuples are still flattened; an object deferred
 *    by the trashcan is destroyed later through Py_TYPE(op)->tp_dealloc, the original again,
 *    which sees the clone type and frees it.
 *  - subclasses: subtype_dealloc (and C subclasses such as OrderedDict) call the base's
 *    tp_dealloc, i.e. this wrapper, with a non-exact type: passed straight through (they
 *    never reach the free list anyway).
 *  - the empty tuple: a static singleton (3.11) whose tupledealloc returns early; never given
 *    the clone type (size-0 tuples pass straight through).
 *  - dict watchers (3.12): dict_dealloc first notifies watchers, which may resurrect the dict;
 *    a resurrected object must keep its real type, so a watched dict (watcher bits set in
 *    ma_version_tag) passes straight through (and may still go to the free list).
 *
 * Why the wrappers are installed only while tracing (not left in place as a pass-through):
 * with the wrapper in PyDict_Type.tp_dealloc, an exact dict passed through would fail the
 * trashcan test above (its type's tp_dealloc is the wrapper, not dict_dealloc), and deep
 * nests would be freed by plain recursion. Restoring the originals on stop() avoids that.
 *
 * A C type readied while tracing that inherits tp_dealloc from dict, list or tuple (a static
 * subtype with tp_dealloc 0) copies the wrapper for good: after stop() it still passes straight
 * through (the flag is off, and its type is not exact anyway), so that is harmless; the wrapper
 * and the saved originals live as long as the process (extension modules are never unloaded).
 *
 * Everything here runs with the GIL held.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

#if PY_VERSION_HEX < 0x030D0000

/* 3.12: the low DICT_MAX_WATCHERS (8) bits of ma_version_tag say which watchers watch the dict
   (internal/pycore_dict.h: DICT_VERSION_MASK). */
#define HT_DICT_WATCHER_MASK ((uint64_t)0xFF)

typedef struct {
    PyTypeObject *builtin;
    destructor wrapper;
    destructor original;
    PyTypeObject clone;
} ht_bypass;

static ht_bypass ht_dict_bypass, ht_list_bypass, ht_tuple_bypass;
static int ht_bypass_ready = 0;
static int ht_bypass_on = 0;

static void
ht_dict_dealloc(PyObject *op)
{
    if (ht_bypass_on && Py_IS_TYPE(op, &PyDict_Type)) {
#if PY_VERSION_HEX >= 0x030C0000
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
        int watched = (((PyDictObject *)op)->ma_version_tag & HT_DICT_WATCHER_MASK) != 0;
#pragma GCC diagnostic pop
        if (!watched)
#endif
            Py_SET_TYPE(op, &ht_dict_bypass.clone);
    }
    ht_dict_bypass.original(op);
}

static void
ht_list_dealloc(PyObject *op)
{
    if (ht_bypass_on && Py_IS_TYPE(op, &PyList_Type)) {
        Py_SET_TYPE(op, &ht_list_bypass.clone);
    }
    ht_list_bypass.original(op);
}

static void
ht_tuple_dealloc(PyObject *op)
{
    if (ht_bypass_on && Py_IS_TYPE(op, &PyTuple_Type) && Py_SIZE(op) != 0) {
        Py_SET_TYPE(op, &ht_tuple_bypass.clone);
    }
    ht_tuple_bypass.original(op);
}

static void
ht_bypass_prepare(ht_bypass *b, PyTypeObject *builtin, destructor wrapper)
{
    b->builtin = builtin;
    b->wrapper = wrapper;
    b->original = builtin->tp_dealloc;
    /* A bitwise copy: same size, flags (GC), tp_free, everything a deallocator reads. It is
       never exposed to Python code, never readied, never freed, and holds no references. */
    memcpy(&b->clone, builtin, sizeof(PyTypeObject));
    b->clone.tp_dealloc = b->original;
}

static int
ht_bypass_switch(ht_bypass *b, int on)
{
    destructor current = b->builtin->tp_dealloc;
    destructor want = on ? b->wrapper : b->original;
    if (current == want) {
        return 1;
    }
    if (current != (on ? b->original : b->wrapper)) {
        return 0; /* someone else replaced the slot: leave it alone */
    }
    __atomic_store_n(&b->builtin->tp_dealloc, want, __ATOMIC_RELEASE);
    return 1;
}

/*
 * Turns the bypass on or off. GIL held. Returns a bit mask of the types whose deallocator is
 * now as asked (1 dict, 2 list, 4 tuple).
 */
int
ht_free_list_bypass(int on)
{
    if (!ht_bypass_ready) {
        if (!on) {
            return 7;
        }
        ht_bypass_prepare(&ht_dict_bypass, &PyDict_Type, ht_dict_dealloc);
        ht_bypass_prepare(&ht_list_bypass, &PyList_Type, ht_list_dealloc);
        ht_bypass_prepare(&ht_tuple_bypass, &PyTuple_Type, ht_tuple_dealloc);
        ht_bypass_ready = 1;
    }
    /* On: the flag first, then the slots; off: the slots first. A wrapper still running (or
       inherited by a type readied meanwhile) sees the flag and passes through. */
    if (on) {
        __atomic_store_n(&ht_bypass_on, 1, __ATOMIC_RELEASE);
    }
    int done = ht_bypass_switch(&ht_dict_bypass, on)
               | ht_bypass_switch(&ht_list_bypass, on) << 1
               | ht_bypass_switch(&ht_tuple_bypass, on) << 2;
    if (!on) {
        __atomic_store_n(&ht_bypass_on, 0, __ATOMIC_RELEASE);
    }
    return done;
}

#else

int
ht_free_list_bypass(int on)
{
    (void)on;
    return 0;
}

#endif
