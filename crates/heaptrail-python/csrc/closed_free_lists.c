/*
 * Free lists closed while heaptrail traces: on CPython 3.13 the main interpreter's lists of
 * floats, tuples, lists, dicts and dict key tables; on 3.11 and 3.12 its float list (their
 * dict, list and tuple lists are bypassed instead: free_list_bypass.c).
 *
 * Why. An object CPython takes from a free list is not allocated, so the allocator hooks
 * neither stamp it with the line creating it (exact mode) nor count it toward the next sample
 * point (sampled mode), and a traced block parked there is reused by another line under its
 * old traceback. Measured on 3.12 before this: a service keeping one float per request
 * (`latencies.append(perf_counter() - t0)`) beside float arithmetic had its 20,000 kept
 * floats blamed on the arithmetic's line, an innocent line that grows like a leak. The
 * reference tracer (3.13, cpython_frames.c) can tell such reuse for objects, but CPython calls
 * it at every object's creation and death, ints and strs included (4-20% of pyperformance's
 * instructions in sampled mode), and it never sees dict key tables, which have a free list of
 * their own. Closed lists make every such object an allocation and every death a free.
 *
 * How, 3.13. numfree = -1 is CPython's own state for a list closed at interpreter finalization
 * (_PyObject_ClearFreeLists with is_finalization): every push tests `numfree < MAX` as an
 * unsigned comparison or `numfree >= 0`, every pop `numfree > 0` or a NULL head, so a list in
 * that state neither takes nor gives an object. Checked against 3.13.0's machine code: pushes
 * in tupledealloc, list_dealloc, dict_dealloc, _PyFloat_ExactDealloc and every dict key
 * table release; pops in tuple_alloc, PyList_New, the dict constructors, new_keys_object,
 * insert_to_emptydict, PyFloat_FromDouble. The slice cache (one object) has no closed state
 * and stays open.
 *
 * How, 3.11/3.12: a float list that is full (numfree = PyFloat_MAXFREELIST) takes no object
 * (float_dealloc and _PyFloat_ExactDealloc test `numfree > 99`, signed, in 3.11.7's and
 * 3.12.1's machine code) and one with a NULL head gives none (PyFloat_FromDouble).
 *
 * Reopened. A full garbage collection clears the lists without finalizing them, which reopens
 * the float list (and 3.13's tuple lists). The Rust side asks ht_free_lists_reopened on every
 * allocation it traces (every allocation in exact mode, every sample point in sampled mode)
 * and closes them again then (src/engine/closed_free_lists.rs). Not from a gc callback: with a
 * callback registered the collector builds an info dict at every collection, whose key table
 * 3.11/3.12's key free list then hands to the program's own dicts.
 *
 * Emptying frees each parked object exactly as CPython's own clearing does (PyObject_Free for
 * floats, PyObject_GC_Del for tuples, lists and dicts, PyMem_Free for key tables).
 *
 * Main GIL held. Nothing here calls into Python.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "free_lists.h"

#if defined(HT_FREE_LISTS_CLOSABLE) || PY_VERSION_HEX < 0x030D0000
#define Py_BUILD_CORE 1
#undef _PyGC_FINALIZED /* 3.11/3.12: pycore_gc.h redefines this public macro, same meaning */
#include "internal/pycore_interp.h"
#undef Py_BUILD_CORE
#endif

#if PY_VERSION_HEX < 0x030D0000 && PyFloat_MAXFREELIST > 0
#define HT_FLOATS_CLOSABLE 1
#endif

#if defined(HT_FLOATS_CLOSABLE) || defined(HT_FREE_LISTS_CLOSABLE)
/* Frees a float list's parked floats (linked through ob_type). */
static void
ht_free_floats(PyFloatObject *f)
{
    while (f != NULL) {
        PyFloatObject *next = (PyFloatObject *)Py_TYPE((PyObject *)f);
        PyObject_Free(f);
        f = next;
    }
}
#endif

#ifdef HT_FREE_LISTS_CLOSABLE
static struct _Py_object_freelists *
ht_main_free_lists(void)
{
    return &PyInterpreterState_Main()->object_state.freelists;
}
#endif

/* Empties and closes the lists (again, after a collection reopened some). 1: closed, none
   left for the reference tracer; 0: this interpreter has none to close (free-threaded, or
   built without free lists). */
int
ht_close_free_lists(void)
{
#if defined(HT_FLOATS_CLOSABLE)
    struct _Py_float_state *floats = &PyInterpreterState_Main()->float_state;
    PyFloatObject *f = floats->free_list;
    floats->free_list = NULL;
    floats->numfree = PyFloat_MAXFREELIST;
    ht_free_floats(f);
    return 1;
#elif defined(HT_FREE_LISTS_CLOSABLE)
    struct _Py_object_freelists *lists = ht_main_free_lists();
    PyFloatObject *f = lists->floats.items;
    lists->floats.items = NULL;
    lists->floats.numfree = -1;
    ht_free_floats(f);
    for (int size = 0; size < PyTuple_NFREELISTS; size++) {
        PyTupleObject *t = lists->tuples.items[size];
        lists->tuples.items[size] = NULL;
        lists->tuples.numfree[size] = -1;
        while (t != NULL) {
            PyTupleObject *next = (PyTupleObject *)t->ob_item[0];
            PyObject_GC_Del(t);
            t = next;
        }
    }
    while (lists->lists.numfree > 0) {
        PyObject_GC_Del(lists->lists.items[--lists->lists.numfree]);
    }
    lists->lists.numfree = -1;
    while (lists->dicts.numfree > 0) {
        PyObject_GC_Del(lists->dicts.items[--lists->dicts.numfree]);
    }
    lists->dicts.numfree = -1;
    while (lists->dictkeys.numfree > 0) {
        PyMem_Free(lists->dictkeys.items[--lists->dictkeys.numfree]);
    }
    lists->dictkeys.numfree = -1;
    return 1;
#else
    return 0;
#endif
}

/* Whether a collection has reopened lists ht_close_free_lists closed (it reopens all of them
   at once: the float list's state stands for them). Two loads. */
int
ht_free_lists_reopened(void)
{
#if defined(HT_FLOATS_CLOSABLE)
    struct _Py_float_state *floats = &PyInterpreterState_Main()->float_state;
    return floats->numfree != PyFloat_MAXFREELIST || floats->free_list != NULL;
#elif defined(HT_FREE_LISTS_CLOSABLE)
    struct _Py_object_freelists *lists = ht_main_free_lists();
    return lists->floats.numfree != -1 || lists->floats.items != NULL;
#else
    return 0;
#endif
}

/* Opens the lists closed by ht_close_free_lists (empty, numfree 0), leaving alone any the
   interpreter has closed itself since (3.13: it is finalizing). */
void
ht_reopen_free_lists(void)
{
#if defined(HT_FLOATS_CLOSABLE)
    struct _Py_float_state *floats = &PyInterpreterState_Main()->float_state;
    if (floats->free_list == NULL && floats->numfree == PyFloat_MAXFREELIST) {
        floats->numfree = 0;
    }
#elif defined(HT_FREE_LISTS_CLOSABLE)
    if (Py_IsFinalizing()) {
        return;
    }
    struct _Py_object_freelists *lists = ht_main_free_lists();
    if (lists->floats.numfree < 0) {
        lists->floats.numfree = 0;
    }
    for (int size = 0; size < PyTuple_NFREELISTS; size++) {
        if (lists->tuples.numfree[size] < 0) {
            lists->tuples.numfree[size] = 0;
        }
    }
    if (lists->lists.numfree < 0) {
        lists->lists.numfree = 0;
    }
    if (lists->dicts.numfree < 0) {
        lists->dicts.numfree = 0;
    }
    if (lists->dictkeys.numfree < 0) {
        lists->dictkeys.numfree = 0;
    }
#endif
}
