/*
 * The one place where heaptrail reads CPython's private structures.
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
#undef Py_BUILD_CORE

#include <stdint.h>

#if PY_VERSION_HEX < 0x030B0000 || PY_VERSION_HEX >= 0x030E0000
#error "heaptrail reads interpreter frames of CPython 3.11, 3.12 and 3.13 only"
#endif

/* Mirrors `RawFrame` in src/frames.rs. */
typedef struct {
    PyCodeObject *code;
    int32_t lasti; /* instruction index, as _PyInterpreterFrame_LASTI */
} ht_raw_frame;

#if PY_VERSION_HEX >= 0x030D0000
#define HT_FRAME_CODE(f) _PyFrame_GetCode(f)
#else
#define HT_FRAME_CODE(f) ((f)->f_code)
#endif

static inline _PyInterpreterFrame *
ht_top_frame(PyThreadState *tstate)
{
#if PY_VERSION_HEX >= 0x030D0000
    return tstate->current_frame;
#else
    return tstate->cframe->current_frame;
#endif
}

static PyInterpreterState *ht_main_interpreter = NULL;

/* Called once with the GIL held, before the hooks are installed. */
void
ht_init(void)
{
    ht_main_interpreter = PyInterpreterState_Main();
}

/*
 * The thread state of the calling thread, and whether this thread holds the GIL of the main
 * interpreter (only then are the tracer's tables, guarded by that GIL, accessed directly).
 * Returns NULL when the thread has no thread state (e.g. during thread teardown).
 */
PyThreadState *
ht_current_thread_state(int *holds_gil)
{
#if PY_VERSION_HEX >= 0x030D0000
    /* 3.13: the attached thread state of *this* thread, NULL when detached. */
    PyThreadState *cur = PyThreadState_GetUnchecked();
    if (cur != NULL) {
        *holds_gil = cur->interp == ht_main_interpreter;
        return cur;
    }
#elif PY_VERSION_HEX >= 0x030C0000
    /* 3.12: same, a thread-local read. */
    PyThreadState *cur = _PyThreadState_UncheckedGet();
    if (cur != NULL) {
        *holds_gil = cur->interp == ht_main_interpreter;
        return cur;
    }
#else
    /* 3.11: the "current" thread state is the GIL holder, which may be another thread. */
    PyThreadState *cur = _PyThreadState_UncheckedGet();
    if (cur != NULL && cur->thread_id == PyThread_get_thread_ident()) {
        *holds_gil = cur->interp == ht_main_interpreter;
        return cur;
    }
#endif
    *holds_gil = 0;
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
 *    thread (the recursion counter), and `*rest` NULL;
 *  - 3.11: that counter also counts C recursion, so `*total` receives the frames copied and
 *    `*rest` the first frame not copied; the caller adds ht_count_frames(*rest), memoised.
 */
int
ht_capture_frames(PyThreadState *tstate, ht_raw_frame *out, int max_frames, int *total,
                  struct _PyInterpreterFrame **rest)
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
    *rest = NULL;
#else
    *total = n;
    *rest = frame;
#endif
    return n;
}

/* The next frame up the stack (towards the bottom): used to validate memoised depths. */
struct _PyInterpreterFrame *
ht_frame_previous(struct _PyInterpreterFrame *frame)
{
    return frame->previous;
}

void *
ht_frame_code(struct _PyInterpreterFrame *frame)
{
    return HT_FRAME_CODE(frame);
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

#if PY_VERSION_HEX >= 0x030D0000
/*
 * 3.13+: objects taken from a free list are re-initialised without any allocation, so the
 * allocator hooks never see them. The reference tracer is told about every new object; the
 * Rust side re-stamps the object's block with the current traceback.
 */
static PyRefTracer ht_previous_tracer = NULL;
static void *ht_previous_data = NULL;
static int (*ht_on_new_object)(uintptr_t block) = NULL;

static int
ht_ref_tracer(PyObject *obj, PyRefTracerEvent event, void *data)
{
    (void)data;
    if (event == PyRefTracer_CREATE && ht_on_new_object != NULL) {
        ht_on_new_object(ht_object_block_address(obj));
    }
    if (ht_previous_tracer != NULL) {
        return ht_previous_tracer(obj, event, ht_previous_data);
    }
    return 0;
}

/* Installs (or removes) the reference tracer. GIL held. Returns 0 on success. */
int
ht_set_ref_tracer(int (*on_new_object)(uintptr_t block))
{
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
#endif
