"""A restricted unpickler for the numpy pickles that datasets ship as (CIFAR's python batches,
animal-mnist's files): it rebuilds plain numeric numpy arrays, numpy scalars, lists, dicts,
tuples, strings, bytes and numbers, and refuses everything else, so a tampered data file can
neither run code nor make us allocate what it does not hold.

Why each rule:
- Only numpy's own array reduction (_reconstruct, then __setstate__ with the raw bytes) is
  allowed. Calling numpy.ndarray(shape) directly, which no honest pickle does, would hand back
  uninitialised memory of any size from a few bytes of file.
- Every array is charged its declared size (shape x itemsize) before numpy allocates it, and
  the charges of one file may total at most the file's own length: an honest pickle stores every
  byte of every array it holds, so a file of 240 bytes cannot name 1.2 GB, nor can 400 arrays
  share one memoized piece of data.
- Arrays and scalars are bool, integer or float: no object arrays (numpy crashes rebuilding
  one whose state holds fewer objects than its shape), no records, no strings.
- Protocol 5's buffers are not accepted: out-of-band ones need a `buffers` argument that is
  never given (pickle itself refuses), and an in-band bytearray is not an array (the reader of
  each format checks the types it gets).
"""

from __future__ import annotations

import io
import math
import pickle

import numpy as np

try:  # numpy >= 2 (the module pickles made by numpy 1.x name, numpy.core, is an alias there)
    from numpy._core.multiarray import _reconstruct as _np_reconstruct
    from numpy._core.multiarray import scalar as _np_scalar
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct as _np_reconstruct
    from numpy.core.multiarray import scalar as _np_scalar

NUMERIC_KINDS = "biuf"  # bool, signed and unsigned integers, floats


def _numeric(dtype) -> np.dtype:
    if not isinstance(dtype, np.dtype):
        raise pickle.UnpicklingError(f"refusing {dtype!r} as an array's dtype")
    if dtype.kind not in NUMERIC_KINDS or dtype.fields is not None or dtype.subdtype is not None:
        raise pickle.UnpicklingError(f"refusing an array of dtype {dtype} (only bool, integer and float arrays)")
    return dtype


def _shape(shape) -> tuple[int, ...]:
    if isinstance(shape, int) and not isinstance(shape, bool):
        shape = (shape,)
    if not isinstance(shape, tuple) or not all(type(n) is int and n >= 0 for n in shape) or len(shape) > 32:
        raise pickle.UnpicklingError(f"refusing {shape!r} as an array's shape")
    return shape


class ArrayUnpickler(pickle.Unpickler):
    """Unpickles `raw` (bytes), charging every array against len(raw); see the module's rules."""

    def __init__(self, raw: bytes):
        super().__init__(io.BytesIO(raw), encoding="bytes")
        self.budget, self.declared = len(raw), 0
        charge = self.charge

        class CheckedArray(np.ndarray):
            """numpy.ndarray as the stream sees it: rebuilt only by _reconstruct + __setstate__."""

            def __new__(cls, shape, dtype=float, *args, **kwargs):
                dtype = _numeric(np.dtype(dtype) if isinstance(dtype, (str, bytes, type)) else dtype)
                charge(_shape(shape), dtype)
                raise pickle.UnpicklingError("refusing numpy.ndarray called directly (uninitialised memory)")

            def __setstate__(self, state):
                if not isinstance(state, tuple) or len(state) not in (4, 5):
                    raise pickle.UnpicklingError("refusing an array state that is not numpy's")
                shape, dtype, _, rawdata = state[-4:]
                shape, dtype = _shape(shape), _numeric(dtype)
                nbytes = charge(shape, dtype)
                if type(rawdata) is not bytes or len(rawdata) != nbytes:
                    size = f"{len(rawdata)} bytes" if type(rawdata) is bytes else f"a {type(rawdata).__name__}"
                    raise pickle.UnpicklingError(f"an array of shape {shape} and dtype {dtype} holds {size} of data")
                super().__setstate__(state)

        self.array_type = CheckedArray

    def charge(self, shape: tuple[int, ...], dtype: np.dtype) -> int:
        """Count an array's bytes against the file before it exists; return them."""
        nbytes = math.prod(shape) * dtype.itemsize
        self.declared += nbytes
        if self.declared > self.budget:
            so_far = f" (arrays of {self.declared} bytes in all)" if self.declared != nbytes else ""
            raise pickle.UnpicklingError(
                f"it declares an array of shape {shape} and dtype {dtype}, {nbytes} bytes{so_far}, "
                f"in a file of {self.budget} bytes"
            )
        return nbytes

    def _reconstruct(self, subtype, shape, dtype):
        if subtype is not self.array_type:
            raise pickle.UnpicklingError(f"refusing to rebuild {subtype!r} as an array")
        if not isinstance(dtype, (bytes, str, np.dtype)):
            raise pickle.UnpicklingError(f"refusing {dtype!r} as an array's dtype")
        shape, dtype = _shape(shape), _numeric(np.dtype(dtype))
        self.charge(shape, dtype)
        return _np_reconstruct(subtype, shape, dtype)

    @staticmethod
    def _scalar(dtype, data=None):
        dtype = _numeric(dtype)
        if type(data) is not bytes or len(data) != dtype.itemsize:
            raise pickle.UnpicklingError(f"refusing a {dtype} scalar made of {data!r:.40}")
        return _np_scalar(dtype, data)

    @staticmethod
    def _dtype(name, align=False, copy=False):
        if not isinstance(name, (str, bytes)):
            raise pickle.UnpicklingError(f"refusing {name!r:.40} as a dtype")
        return np.dtype(name, align, copy)  # checked by _numeric wherever an array or scalar uses it

    @staticmethod
    def _latin1(text, encoding="utf-8"):
        # How Python 3 pickles bytes at protocol 2: _codecs.encode(str, 'latin1'); nothing else.
        if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
            raise pickle.UnpicklingError(f"refusing _codecs.encode with encoding {encoding!r:.40}")
        return text.encode("latin1")

    def find_class(self, module, name):
        allowed = {
            ("numpy", "ndarray"): self.array_type,
            ("numpy", "dtype"): self._dtype,
            ("_codecs", "encode"): self._latin1,
        }
        for core in ("numpy.core.multiarray", "numpy._core.multiarray"):
            allowed[(core, "_reconstruct")] = self._reconstruct
            allowed[(core, "scalar")] = self._scalar
        if (module, name) not in allowed:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data file")
        return allowed[(module, name)]


def load_arrays(raw: bytes):
    """The object pickled in `raw`, under ArrayUnpickler's rules (pickle.UnpicklingError, or
    another exception of a damaged stream, otherwise)."""
    return ArrayUnpickler(raw).load()
