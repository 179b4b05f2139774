"""Names the object that keeps a leaking site's memory alive ("who holds it").

The Rust side finds the containers with the most references to blocks allocated through the
leaking line (one tp_traverse walk over the objects the garbage collector tracks); this module
turns the top one into a name a person recognises: `module.attribute`, `Class.attribute`,
`instance attribute`, a closure variable, or a function's local variable.
"""

import gc
import sys
import types

from . import _native


def describe_holders(filename, lineno, count):
    """A short description of what holds most of the `count` live blocks allocated at
    filename:lineno, or None when no single container the garbage collector can see holds a
    good share of them (e.g. they are spread out, or held by C extension state)."""
    try:
        holders = _native._find_holders(filename, lineno, 3)
    except Exception:
        return None
    if not holders or holders[0][1] < max(2, count // 20):
        return None
    obj, refs = holders[0]
    what = f"{type(obj).__name__} with {refs} reference{'s' if refs != 1 else ''} to its blocks"
    name = _name_of(obj, ignore=(holders,))
    del holders
    return f"{name} ({what})" if name else what


def _name_of(obj, ignore=()):
    """The most telling name of `obj` among its referrers: a module attribute first, then a
    class or instance attribute, a function's local variable, a closure variable."""
    ignored = {id(x) for x in ignore} | {id(sys._getframe())}
    if isinstance(obj, dict):
        module = _module_of_namespace(obj)
        if module:
            return f"the globals of module {module}"
    names = []  # (priority, name)
    referrers = gc.get_referrers(obj)
    ignored.add(id(referrers))
    for ref in referrers:
        if id(ref) in ignored:
            continue
        if isinstance(ref, dict):
            key = next((k for k, v in ref.items() if v is obj), None)
            if key is None:
                continue
            module = _module_of_namespace(ref)
            if module:
                names.append((0, f"{module}.{key}"))
                continue
            owner = _owner_of_dict(ref, ignored)
            names.append((1, f"{owner}.{key}") if owner else (4, f"dict entry {key!r}"))
        elif isinstance(ref, types.FrameType):
            names.append((2, f"a local variable of {ref.f_code.co_name}() "
                             f"({ref.f_code.co_filename}:{ref.f_lineno})"))
        elif isinstance(ref, types.CellType):
            names.append((3, "a closure variable"))
        else:
            for attr in _attribute_names(ref):
                if getattr(ref, attr, None) is obj:
                    names.append((1, f"{type(ref).__qualname__}.{attr}"))
    del referrers
    return min(names)[1] if names else None


def _module_of_namespace(namespace):
    name = namespace.get("__name__") if isinstance(namespace.get("__name__"), str) else None
    module = sys.modules.get(name) if name else None
    if module is not None and getattr(module, "__dict__", None) is namespace:
        return name
    return None


def _owner_of_dict(namespace, ignored):
    for ref in gc.get_referrers(namespace):
        if id(ref) in ignored:
            continue
        if isinstance(ref, type) and ref.__dict__ is namespace:
            return ref.__qualname__
        if getattr(ref, "__dict__", None) is namespace:
            return f"{type(ref).__qualname__} instance"
    return None


def _attribute_names(obj):
    names = []
    for cls in type(obj).__mro__:
        slots = cls.__dict__.get("__slots__", ())
        names.extend([slots] if isinstance(slots, str) else slots)
    return names
