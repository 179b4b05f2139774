/*
 * CPython 3.13: the main interpreter's free lists of floats, tuples, lists, dicts and dict key
 * tables, emptied and closed while heaptrail traces.
 *
 * Why. An object CPython takes from a free list is not allocated, so the allocator hooks
 * neither stamp it with the line creating it (exact mode) nor count it toward the next sample
 * point (sampled mode), and a traced block parked there would be reused by another line under
 * its old traceback. The reference tracer (cpython_frames.c) can tell such reuse for objects,
 * but CPython calls it at every object's creation and death, ints and strs included: in
 * sampled mode that call cost 4-20% of pyperformance's instructions (chaos, json_dumps:
 * 1.20x), and it never sees dict key tables, which have a free list of their own. Closed
 * lists make every such object an allocation and every death a free, which the hooks see
 * (in sampled mode the C fast path answers them in a few instructions).
 *
 * How. numfree = -1 is CPython's own state for a list closed at interpreter finalization
 * (_PyObject_ClearFreeLists with is_finalization): every push tests `numfree < MAX` as an
 * unsigned comparison or `numfree >= 0`, every pop `numfree > 0` or a NULL head, so a list in
 * that state neither takes nor gives an object. Checked against 3.13.0's machine code: pushes
 * in tupledealloc, list_dealloc, dict_dealloc, _PyFloat_ExactDealloc and every dict key
 * table release; pops in tuple_alloc, PyList_New, the dict constructors, new_keys_object,
 * insert_to_emptydict, PyFloat_FromDouble.
 *
 * A full garbage collection clears the lists without finalizing them, which reopens the float
 * and tuple lists (numfree back to 0); the Rust side closes them again from a gc callback
 * (src/engine/closed_free_lists.rs). The slice cache (one object) has no closed state and
 * stays open.
 *
 * Emptying frees each parked object exactly as CPython's own clearing does (PyObject_Free for
 * floats, PyObject_GC_Del for tuples, lists and dicts, PyMem_Free for key tables).
 *
 * GIL held. Nothing here calls into Python.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "free_lists.h"

#ifdef HT_FREE_LISTS_CLOSABLE
#define Py_BUILD_CORE 1
#include "internal/pycore_interp.h"
#undef Py_BUILD_CORE
#endif

#ifdef HT_FREE_LISTS_CLOSABLE
static struct _Py_object_freelists *
ht_main_free_lists(void)
{
    return &PyInterpreterState_Main()->object_state.freelists;
}
#endif

/* Empties and closes the lists (again, after a collection reopened some). 1: closed;
   0: this interpreter has no lists to close (before 3.13, free-threaded or built without
   free lists). */
int
ht_close_free_lists(void)
{
#ifdef HT_FREE_LISTS_CLOSABLE
    struct _Py_object_freelists *lists = ht_main_free_lists();

    PyFloatObject *f = lists->floats.items;
    lists->floats.items = NULL;
    lists->floats.numfree = -1;
    while (f != NULL) {
        PyFloatObject *next = (PyFloatObject *)Py_TYPE((PyObject *)f);
        PyObject_Free(f);
        f = next;
    }
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

/* Opens the lists closed by ht_close_free_lists (empty, numfree 0), leaving alone any the
   interpreter has closed itself since (it is finalizing). */
void
ht_reopen_free_lists(void)
{
#ifdef HT_FREE_LISTS_CLOSABLE
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
