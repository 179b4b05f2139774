"""A small schema library, installed into site-packages for heaptrail's watcher tests.

It stands for libraries such as SQLAlchemy, where one user call (`Table(...)` on a MetaData)
runs through many frames of the library before anything is allocated: here `Schema.define()`
passes a table definition through a chain of validators/normalisers (middleware style, two
frames per stage) and the last stage builds the Table and registers it in the Schema, which
keeps it for ever. The allocation is more than 16 frames below the user's line.
"""

__all__ = ["Column", "Table", "Schema"]


class Column:
    __slots__ = ("name", "type", "nullable", "default")

    def __init__(self, name, type, nullable=True, default=None):
        self.name = name
        self.type = type
        self.nullable = nullable
        self.default = default


class Table:
    def __init__(self, name, columns, options):
        self.name = name
        self.columns = [Column(n, t) for n, t in columns]
        self.options = dict(options)
        self.indexes = {c.name: f"ix_{name}_{c.name}" for c in self.columns}


class _Stage:
    """One link of the chain: runs its step with a continuation to the rest of the chain."""

    def __init__(self, step, rest):
        self.step = step
        self.rest = rest

    def __call__(self, definition):
        return self.step(definition, self.rest)


def _check_name(d, rest):
    if not d["name"].isidentifier():
        raise ValueError(f"bad table name {d['name']!r}")
    return rest(d)


def _check_columns(d, rest):
    if not d["columns"]:
        raise ValueError("a table needs columns")
    return rest(d)


def _passthrough(d, rest):
    return rest(d)


_STEPS = [_check_name, _check_columns] + [_passthrough] * 10


class Schema:
    """Keeps every table defined on it (like SQLAlchemy's MetaData)."""

    def __init__(self):
        self.tables = {}
        chain = self._register
        for step in reversed(_STEPS):
            chain = _Stage(step, chain)
        self._chain = chain

    def define(self, name, columns, **options):
        return self._chain({"name": name, "columns": list(columns), "options": options})

    def _register(self, d):
        table = Table(d["name"], d["columns"], d["options"])
        self.tables[d["name"]] = table
        return table
