/*
 * Frame capture: where the allocator hooks read CPython's private structures (the holder
 * analysis reads others in cpython_internals.c, the free-list bypass in free_list_bypass.c).
 *
 * Why C and not Rust structs mirroring the layouts: these functions are compiled against the
 * exact headers of the interpreter the extension is built for (one wheel per CPython version),
 * so field offsets and the header's own inline helpers (_PyFrame_IsIncomplete,
 * _PyInterpreterFrame_LASTI, _PyType_PreHeaderSize) are always right for that version.
 *
 * Every function here is called from inside an allocator hook, possibly without the GIL:
 * nothing here allocates, takes a lock, touches a reference count or calls into Python.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#define Py_BUILD_CORE 1
#include "internal/pycore_frame.h"
#if PY_VERSION_HEX < 0x030C0000
/* _PyRuntimeState_GetThreadState: the GIL holder, read inline. (pycore_gc.h redefines this
   public macro with the same meaning.) */
#undef _PyGC_FINALIZED
#include "internal/pycore_pystate.h"
#endif
#undef Py_BUILD_CORE

#include <stdint.h>

#include "free_lists.h"
#include "sampled_fast_path.h"

#if PY_VERSION_HEX < 0x030B0000 || PY_VERSION_HEX >= 0x030E0000
#error "heaptrail reads interpreter frames of CPython 3.11, 3.12 and 3.13 only"
#endif

/* Mirrors `RawFrame` in src/engine/frames.rs: two whole words, no padding, so that frames compare
   and hash as plain words. */
typedef struct {
    PyCodeObject *code;
    int64_t lasti; /* instruction index, as _PyInterpreterFrame_LASTI */
} ht_raw_frame;

#include "cpython_frame_access.h"

static PyInterpreterState *ht_main_interpreter = NULL;

/* Called once with the GIL held, before the hooks are installed. */
void
ht_init(void)
{
    ht_main_interpreter = PyInterpreterState_Main();
}

/*
 * heaptrail's own per-thread flags. Initial-exec TLS: read with one %fs-relative load, where
 * Rust's thread_local! in a shared library goes through __tls_get_addr on every allocation.
 * (Two words of static TLS; glibc keeps spare room for libraries loaded later.)
 */
#define HT_TLS __thread __attribute__((tls_model("initial-exec")))
static HT_TLS int ht_busy;                /* doing heaptrail's own work: do not trace */
/* Block allocated last by this thread (3.13 re-stamping); also written by sampled mode's
   fast path (sampled_fast_path.h declares it). */
HT_TLS uintptr_t ht_last_alloc;
#if PY_VERSION_HEX < 0x030C0000
static HT_TLS unsigned long ht_thread_ident; /* PyThread_get_thread_ident(), cached */
#endif

int
ht_set_busy(int busy)
{
    int old = ht_busy;
    ht_busy = busy;
    return old;
}

/* Whether ht_note_allocated does anything (free_lists.h): Rust skips the call on every
   allocation elsewhere instead of paying for a call into an empty function. */
#ifdef HT_TRACKS_LAST_ALLOC
const int ht_tracks_last_alloc = 1;
#else
const int ht_tracks_last_alloc = 0;
#endif

/* Records `block` as the calling thread's latest allocation: the reference tracer tells a
   new object's fresh block from one reused from a free list with it. A no-op where it is not
   used (free_lists.h). */
void
ht_note_allocated(uintptr_t block)
{
#ifdef HT_TRACKS_LAST_ALLOC
    ht_last_alloc = block;
#else
    (void)block;
#endif
}

/* Whether ht_capture_frames's `*total` is the depth of the whole stack (1: 3.12+) or only the
   frames copied, the caller adding the depth below `*rest` (0: 3.11; see ht_capture_frames). */
#if PY_VERSION_HEX >= 0x030C0000
const int ht_capture_total_is_complete = 1;
#else
const int ht_capture_total_is_complete = 0;
#endif

/*
 * The thread state of the calling thread, and in `*flags` whether this thread holds the GIL
 * of the main interpreter (HT_HOLDS_GIL: only then are the tracer's tables, guarded by that
 * GIL, accessed directly) and whether it is doing heaptrail's own work (HT_BUSY).
 * Returns NULL when the thread has no thread state (e.g. during thread teardown).
 */
#define HT_HOLDS_GIL 1
#define HT_BUSY 2

PyThreadState *
ht_current_thread_state(int *flags)
{
    int busy = ht_busy ? HT_BUSY : 0;
#if PY_VERSION_HEX >= 0x030D0000
    /* 3.13: the attached thread state of *this* thread, NULL when detached. */
    PyThreadState *cur = PyThreadState_GetUnchecked();
    if (cur != NULL) {
        *flags = busy | (cur->interp == ht_main_interpreter ? HT_HOLDS_GIL : 0);
        return cur;
    }
#elif PY_VERSION_HEX >= 0x030C0000
    /* 3.12: same, a thread-local read. */
    PyThreadState *cur = _PyThreadState_UncheckedGet();
    if (cur != NULL) {
        *flags = busy | (cur->interp == ht_main_interpreter ? HT_HOLDS_GIL : 0);
        return cur;
    }
#else
    /* 3.11: the "current" thread state is the GIL holder, which may be another thread. */
    PyThreadState *cur = _PyRuntimeState_GetThreadState(&_PyRuntime);
    if (cur != NULL) {
        unsigned long me = ht_thread_ident;
        if (me == 0) {
            me = ht_thread_ident = PyThread_get_thread_ident();
        }
        if (cur->thread_id == me) {
            *flags = busy | (cur->interp == ht_main_interpreter ? HT_HOLDS_GIL : 0);
            return cur;
        }
    }
#endif
    *flags = busy;
    /* A thread without the GIL: its own frames are still stable (only it pops them). */
    return PyGILState_GetThisThreadState();
}

/* Complete frames from `frame` to the bottom of the stack, saturated at 65535. */
int
ht_count_frames(struct _PyInterpreterFrame *frame)
{
    int depth = 0;
    for (; frame != NULL && depth < 65535; frame = frame->previous) {
        if (!_PyFrame_IsIncomplete(frame)) {
            depth++;
        }
    }
    return depth;
}

/*
 * Copies up to `max_frames` complete frames of `tstate`'s stack, most recent first, into `out`
 * and returns how many it wrote. Incomplete frames (a call still in its prologue, or a C-stack
 * entry frame) are skipped, as CPython's own tracemalloc does: their code is not running yet.
 *
 * The depth of the rest of the stack (tracemalloc's total_nframe) is the expensive part of a
 * capture at deep stacks, so it is not walked here:
 *  - 3.12+: `*total` receives the interpreter's own count of Python frames running on this
 *    thread (the recursion counter);
 *  - 3.11: that counter also counts C recursion, so `*total` receives the frames copied; the
 *    caller adds ht_count_frames(*rest), memoised by the identity of `*rest`.
 * On every version `*rest` receives the first frame not copied (NULL at the bottom of the
 * stack) and `rest_identity` its caller and code (`[0]` and `[1]`, read here to save the
 * caller two calls): what identifies `*rest`'s position in its stack, for memos.
 */
int
ht_capture_frames(PyThreadState *tstate, ht_raw_frame *out, int max_frames, int *total,
                  struct _PyInterpreterFrame **rest, void *rest_identity[2])
{
    int n = 0;
    _PyInterpreterFrame *frame = ht_top_frame(tstate);
    for (; frame != NULL && n < max_frames; frame = frame->previous) {
        if (_PyFrame_IsIncomplete(frame)) {
            continue;
        }
        out[n].code = HT_FRAME_CODE(frame);
        out[n].lasti = _PyInterpreterFrame_LASTI(frame);
        n++;
    }
#if PY_VERSION_HEX >= 0x030C0000
    int running = tstate->py_recursion_limit - tstate->py_recursion_remaining;
    /* The counter includes a frame still in its prologue, which the copy above skipped. */
    *total = running < n ? n : (running > 65535 ? 65535 : running);
#else
    *total = n;
#endif
    /* All versions: where the walk for a user frame beyond the limit continues. */
    *rest = frame;
    if (frame != NULL) {
        rest_identity[0] = frame->previous;
        rest_identity[1] = HT_FRAME_EXECUTABLE(frame);
    }
    return n;
}

/*
 * The first complete frame at or below `frame`: written to `*out`, and `*next` receives the
 * frame below it (where a walk continues). Returns 0, writing nothing, at the bottom of the
 * stack. Same conditions as ht_capture_frames: `frame` belongs to the calling thread's stack.
 */
int
ht_next_complete_frame(struct _PyInterpreterFrame *frame, ht_raw_frame *out,
                       struct _PyInterpreterFrame **next)
{
    for (; frame != NULL; frame = frame->previous) {
        if (!_PyFrame_IsIncomplete(frame)) {
            out->code = HT_FRAME_CODE(frame);
            out->lasti = _PyInterpreterFrame_LASTI(frame);
            *next = frame->previous;
            return 1;
        }
    }
    return 0;
}

/*
 * `code.co_filename` without allocating (this runs inside allocator hooks): its characters as
 * stored by the string (`*kind` 1, 2 or 4 bytes each, `*len` of them). Returns 0 if the
 * filename is not a ready string.
 */
int
ht_code_filename(PyCodeObject *code, const void **data, int *kind, Py_ssize_t *len)
{
    PyObject *name = code->co_filename;
    if (name == NULL || !PyUnicode_Check(name)) {
        return 0;
    }
    *data = PyUnicode_DATA(name);
    *kind = (int)PyUnicode_KIND(name);
    *len = PyUnicode_GET_LENGTH(name);
    return 1;
}

/*
 * `code.co_qualname` the same way (its characters, as for ht_code_filename), and
 * `code.co_firstlineno`. Both are set when the code object is made and never change. Returns 0
 * if the name is not a string (the line is still set).
 */
int
ht_code_function(PyCodeObject *code, const void **data, int *kind, Py_ssize_t *len,
                 int *firstlineno)
{
    PyObject *name = code->co_qualname;
    *firstlineno = code->co_firstlineno;
    if (name == NULL || !PyUnicode_Check(name)) {
        return 0;
    }
    *data = PyUnicode_DATA(name);
    *kind = (int)PyUnicode_KIND(name);
    *len = PyUnicode_GET_LENGTH(name);
    return 1;
}

/* (walked depth, depth the interpreter reports) of the calling thread, for tests. */
void
ht_stack_depths(int *walked, int *reported)
{
    PyThreadState *tstate = PyThreadState_Get();
    *walked = ht_count_frames(ht_top_frame(tstate));
#if PY_VERSION_HEX >= 0x030C0000
    *reported = tstate->py_recursion_limit - tstate->py_recursion_remaining;
#else
    *reported = -1;
#endif
}

/* The line of instruction index `lasti` in `code`, 0 if unknown (as tracemalloc reports it). */
int
ht_code_lineno(PyCodeObject *code, int lasti)
{
    int lineno = PyCode_Addr2Line(code, lasti * (int)sizeof(_Py_CODEUNIT));
    return lineno < 0 ? 0 : lineno;
}

/*
 * Where the memory block of `obj` starts: GC objects and objects with a managed dict or
 * weakref list are allocated with a pre-header before the PyObject.
 */
#if PY_VERSION_HEX >= 0x030C0000
#define HT_PREHEADER_FLAGS Py_TPFLAGS_PREHEADER
#else
#define HT_PREHEADER_FLAGS Py_TPFLAGS_MANAGED_DICT
#endif

uintptr_t
ht_object_block_address(PyObject *obj)
{
    /* Same computation as the interpreter's private _PyType_PreHeaderSize (whose header,
       pycore_object.h, cannot be included from an extension on 3.11). */
    PyTypeObject *tp = Py_TYPE(obj);
    size_t pre = 0;
    if (PyType_IS_GC(tp)) {
        pre += 2 * sizeof(uintptr_t); /* PyGC_Head: _gc_next, _gc_prev (internal/pycore_gc.h) */
    }
    if (PyType_HasFeature(tp, HT_PREHEADER_FLAGS)) {
        pre += 2 * sizeof(PyObject *);
    }
    return (uintptr_t)obj - pre;
}

#ifdef HT_TRACKS_LAST_ALLOC
/*
 * 3.13+ where the free lists cannot be closed (free_lists.h): objects taken from a free list
 * are re-initialised without any allocation, so the allocator hooks never see them. The
 * reference tracer is told about every new object; the Rust side re-stamps the object's
 * block with the current traceback.
 */
static PyRefTracer ht_previous_tracer = NULL;
static void *ht_previous_data = NULL;
static int (*ht_on_new_object)(uintptr_t block, size_t size, int fresh) = NULL;
static int (*ht_on_dead_object)(uintptr_t block) = NULL;

/*
 * The size the block of `obj` was allocated with, for objects of the builtin types that
 * CPython 3.13 re-initialises from a free list (Include/internal/pycore_freelist.h: float,
 * tuple, list, dict, slice; contexts and async generator wrappers are left out), so that a
 * reused block heaptrail never saw allocated can be traced with its true size. 0 for any
 * other type: its block size is not derived here. Same computation as the allocation:
 * pre-header (`block` is where the block starts, ht_object_block_address) + _PyObject_SIZE,
 * or _PyObject_VAR_SIZE with the tuple's item count.
 */
static size_t
ht_free_list_object_size(PyObject *obj, uintptr_t block)
{
    PyTypeObject *tp = Py_TYPE(obj);
    size_t body;
    if (tp == &PyTuple_Type) {
        body = _PyObject_VAR_SIZE(tp, Py_SIZE(obj));
    }
    else if (tp == &PyFloat_Type || tp == &PyList_Type || tp == &PyDict_Type
             || tp == &PySlice_Type) {
        body = (size_t)tp->tp_basicsize;
    }
    else {
        return 0;
    }
    return body + (size_t)((uintptr_t)obj - block);
}

static int
ht_ref_tracer(PyObject *obj, PyRefTracerEvent event, void *data)
{
    (void)data;
    if (event == PyRefTracer_CREATE && ht_on_new_object != NULL) {
        uintptr_t block = ht_object_block_address(obj);
        /* Fresh: the thread's latest allocation is this object's block (stamped, or counted
           by the sampler, when it was allocated). Forgotten now, so that the next object in
           the same block (reused from a free list, no allocation) is not taken for fresh. */
        int fresh = ht_last_alloc == block;
        ht_last_alloc = 0;
        size_t size = ht_free_list_object_size(obj, block);
        if (fresh && size == 0) {
            /* A type without a free list, so certainly allocated just now by this thread:
               the allocation hook has traced it (exact mode) or sampled or counted it
               (sampled mode). Most new objects take this branch (every int), so it must not
               call into Rust: on integer-heavy loops that call was a tenth of exact mode's
               cost on 3.13. (A free-list type's match can be stale; Rust checks it.) */
        }
        else if (!ht_certainly_unsampled(block)) {
            ht_on_new_object(block, size, fresh);
        }
        else if (!fresh) {
            /* Sampled mode, a block with no trace, and no allocation made it: an object taken
               from a free list. The sampler counts it as the allocation it replaces (else a
               leak fed from free lists would be all but invisible); Rust is asked only when
               it holds a sample point. */
            if (size != 0 && !ht_sample_count_unsampled((int64_t)size)) {
                ht_on_new_object(block, size, fresh);
            }
        }
    }
    else if (event == PyRefTracer_DESTROY && ht_on_dead_object != NULL) {
        /* Told before the deallocator runs, which may park the block in a free list
           instead of freeing it: a parked object is dead and must not count as live. */
        uintptr_t block = ht_object_block_address(obj);
        if (!ht_certainly_unsampled(block) && ht_free_list_object_size(obj, block) != 0) {
            ht_on_dead_object(block);
        }
    }
    if (ht_previous_tracer != NULL) {
        return ht_previous_tracer(obj, event, ht_previous_data);
    }
    return 0;
}

/* Installs (or removes) the reference tracer. GIL held. Returns 0 on success. */
int
ht_set_ref_tracer(int (*on_new_object)(uintptr_t block, size_t size, int fresh),
                  int (*on_dead_object)(uintptr_t block))
{
    ht_on_dead_object = on_dead_object;
    if (on_new_object != NULL) {
        void *data = NULL;
        PyRefTracer current = PyRefTracer_GetTracer(&data);
        if (current != ht_ref_tracer) {
            ht_previous_tracer = current;
            ht_previous_data = data;
        }
        ht_on_new_object = on_new_object;
        return PyRefTracer_SetTracer(ht_ref_tracer, NULL);
    }
    ht_on_new_object = NULL;
    void *data = NULL;
    if (PyRefTracer_GetTracer(&data) == ht_ref_tracer) {
        int rc = PyRefTracer_SetTracer(ht_previous_tracer, ht_previous_data);
        ht_previous_tracer = NULL;
        ht_previous_data = NULL;
        return rc;
    }
    return 0;
}

#else

/* Not used here (free_lists.h): nothing to install, success. */
int
ht_set_ref_tracer(int (*on_new_object)(uintptr_t block, size_t size, int fresh),
                  int (*on_dead_object)(uintptr_t block))
{
    (void)on_new_object;
    (void)on_dead_object;
    return 0;
}

#endif
