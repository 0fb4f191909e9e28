"""One launch's plan: what packing a kernel's arguments needs, worked out once per (kernel, float type, index type).

``loader.launch`` runs on every launch of every step, so its Python side is on the step's critical path
(issue 16: at most 5 us per launch). What depends only on the kernel's resolved signature and the float
type is decided here, once: which parameters are pointers (and their element types), which are integers
(their numpy type and range), which are float scalars, and C-level getters (``operator.itemgetter``) that
pick each group out of the argument tuple and put the packed values back in parameter order. What depends
on the shapes (the integer arguments) is memoised per plan: the tuple of a launch's integer arguments maps
to their exact numpy scalars and to the default grid. Shapes repeat from step to step, so a steady step
packs with a few tuple lookups and one check per pointer.

The checks are those the loader has always made, on every launch: the argument count, every pointer a
C-contiguous array of its declared element type, every integer within its C type's range (checked when
the integers are first seen: a memoised tuple passed them), every scalar converted to its exact C type.
"""
import operator

import numpy

__all__ = ["LaunchPlan", "parameter_kinds", "MEMO_LIMIT"]

_INT_RANGE = {"int": (-2 ** 31, 2 ** 31 - 1), "long long": (-2 ** 63, 2 ** 63 - 1)}
_INT_TYPES = {"int": numpy.int32, "long long": numpy.int64}
# Integer-argument tuples remembered per plan; past this the memo starts over (shapes that never repeat).
MEMO_LIMIT = 4096


def parameter_kinds(signature, dtype, pointer_dtypes):
    """Per parameter of ``signature`` (resolved C types): ('p', element dtype), ('s', numpy float type) or
    ('i', numpy integer type, low, high). ``T`` is ``dtype``; pointers to other types use ``pointer_dtypes``."""
    kinds = []
    for ctype in signature:
        if ctype.endswith("*"):
            element = ctype.rstrip("*").replace("const ", "").strip()
            kinds.append(("p", pointer_dtypes.get(element, dtype)))
        elif ctype == "T":
            kinds.append(("s", dtype.type))
        elif ctype == "double":
            kinds.append(("s", numpy.float64))
        elif ctype in _INT_TYPES:
            kinds.append(("i", _INT_TYPES[ctype]) + _INT_RANGE[ctype])
        else:
            raise ValueError(f"parameter C type {ctype!r} is not a pointer, T, double, int or long long")
    return tuple(kinds)


def _getter(positions):
    """A C-level function: args -> tuple of ``args[p]`` for p in ``positions`` (a tuple even for one or none)."""
    if not positions:
        return lambda args: ()
    if len(positions) == 1:
        position = positions[0]
        return lambda args: (args[position],)
    return operator.itemgetter(*positions)


class LaunchPlan:
    """The packing of one kernel's arguments for one float type and index type (see the module docstring).

    Args:
        signature: the kernel's parameter C types, "I" already resolved (``loader.resolved_signature``).
        dtype: the float type (a numpy dtype), the C ``T``.
        pointer_dtypes: element dtype of each non-``T`` pointer C type (``loader.POINTER_DTYPES``).
        expression: the NVRTC name expression of the instantiation (``"im2col<float, int>"``).
        grid_for: blocks of a grid-stride kernel over a count, for the default grid (the last argument).
        what: how errors name the kernel.
    """

    __slots__ = ("signature", "expression", "what", "count", "_pointers", "_pointer_dtypes", "_scalars",
                 "_scalar_types", "_ints", "_int_kinds", "_order", "_memo", "_scalar_memo", "_grid_for", "_grid_from_last")

    def __init__(self, signature, dtype, pointer_dtypes, expression, grid_for, what="kernel"):
        kinds = parameter_kinds(signature, numpy.dtype(dtype), pointer_dtypes)
        self.signature, self.expression, self.what, self.count = tuple(signature), expression, what, len(kinds)
        pointers = tuple(p for p, k in enumerate(kinds) if k[0] == "p")
        scalars = tuple(p for p, k in enumerate(kinds) if k[0] == "s")
        ints = tuple(p for p, k in enumerate(kinds) if k[0] == "i")
        self._pointers, self._scalars, self._ints = _getter(pointers), _getter(scalars), _getter(ints)
        self._pointer_dtypes = tuple((p, kinds[p][1]) for p in pointers)
        self._scalar_types = tuple(kinds[p][1] for p in scalars)
        self._int_kinds = tuple((p,) + kinds[p][1:] for p in ints)
        # packed = order(pointers + scalars + ints): each parameter's place in that concatenation
        place = {p: i for i, p in enumerate(pointers + scalars + ints)}
        self._order = _getter(tuple(place[p] for p in range(len(kinds))))
        self._memo, self._scalar_memo = {}, {}
        self._grid_for = grid_for
        self._grid_from_last = bool(kinds) and kinds[-1][0] == "i"

    def pack(self, args):
        """(packed arguments in parameter order, the default grid ``(grid_for(args[-1]),)``) for ``args``."""
        if len(args) != self.count:
            raise TypeError(f"{self.what} takes {self.count} arguments, got {len(args)}")
        pointers = self._pointers(args)
        for (position, dtype), value in zip(self._pointer_dtypes, pointers):
            if getattr(value, "dtype", None) != dtype or not value.flags.c_contiguous:
                self._pointer_error(position, dtype, value)
        ints = self._ints(args)
        try:
            known = self._memo.get(ints)
        except TypeError:  # an unhashable value where an integer belongs: _remember names it
            known = None
        if known is None:
            known = self._remember(ints, args)
        scalars = self._scalars(args)
        if scalars:
            # hyper-parameters repeat too (a NaN never matches its memo entry, and is converted each time)
            converted = self._scalar_memo.get(scalars)
            if converted is None:
                converted = self._remember_scalars(scalars)
            scalars = converted
        return self._order(pointers + scalars + known[0]), known[1]

    def _remember_scalars(self, scalars):
        if len(self._scalar_memo) >= MEMO_LIMIT:
            self._scalar_memo.clear()
        converted = self._scalar_memo[scalars] = tuple(t(v) for t, v in zip(self._scalar_types, scalars))
        return converted

    def _remember(self, ints, args):
        converted = []
        for (position, int_type, low, high), value in zip(self._int_kinds, ints):
            if not isinstance(value, (int, numpy.integer)) or not low <= value <= high:
                raise ValueError(f"{self.what} argument {position} ({self.signature[position]}) = {value} "
                                 f"does not fit the C type")
            converted.append(int_type(value))
        if len(self._memo) >= MEMO_LIMIT:
            self._memo.clear()
        grid = (self._grid_for(args[-1]),) if self._grid_from_last else None
        known = self._memo[ints] = (tuple(converted), grid)
        return known

    def _pointer_error(self, position, dtype, value):
        got = f"{type(value).__name__} {getattr(value, 'dtype', None)}"
        raise TypeError(f"{self.what} argument {position} ({self.signature[position]}) needs a C-contiguous "
                        f"{dtype} array, got {got}")
