"""mt.save/mt.load: nested checkpoints without pickle, any key, atomic writes, and clear errors on bad files."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest

import microtensor as mt


def nanogpt_checkpoint() -> dict:
    """The shape of nanoGPT's checkpoint: model and optimizer state, arguments, progress, config."""
    return {
        "model": {"wte.weight": mt.ones(4, 3), "lm_head.weight": mt.arange(6.0).reshape(2, 3)},
        "optimizer": {
            "state": {0: {"step": mt.tensor(5.0), "exp_avg": mt.zeros(4, 3)}},
            "param_groups": [{"lr": 6e-4, "betas": (0.9, 0.95), "weight_decay": 0.1, "params": [0, 1]}],
        },
        "model_args": {"n_layer": 2, "bias": False, "dropout": 0.0},
        "iter_num": 5,
        "best_val_loss": 1.25,
        "config": {"dataset": "shakespeare_char", "init_from": None, "eval_only": False, "inf": float("inf")},
        "array": np.arange(3, dtype=np.int16),
        "numpy_number": np.float64(0.5),
        "list": [mt.zeros(1), 2, "three"],
    }


def assert_same_tree(got, expected) -> None:
    """Same containers, same keys, same leaf types and values."""
    assert type(got) is type(expected), (got, expected)
    if isinstance(expected, dict):
        assert list(got) == list(expected)
        for key in expected:
            assert_same_tree(got[key], expected[key])
    elif isinstance(expected, (list, tuple)):
        assert len(got) == len(expected)
        for a, b in zip(got, expected, strict=True):
            assert_same_tree(a, b)
    elif isinstance(expected, (mt.Tensor, np.ndarray, np.generic)):
        assert got.dtype == expected.dtype and got.shape == expected.shape
        np.testing.assert_array_equal(np.asarray(got), np.asarray(expected))
    else:
        assert got == expected


def test_nested_checkpoint_round_trips_with_types(tmp_path) -> None:
    ckpt = nanogpt_checkpoint()
    mt.save(ckpt, tmp_path / "ckpt.pt")
    assert_same_tree(mt.load(tmp_path / "ckpt.pt", map_location="cpu", weights_only=True), ckpt)
    assert os.listdir(tmp_path) == ["ckpt.pt"]  # no temporary file left
    with zipfile.ZipFile(tmp_path / "ckpt.pt") as zf:  # arrays only, never a pickle
        assert all(name.endswith(".npy") or name == "structure.json" for name in zf.namelist())


def test_nested_round_trip_matches_torch_save_load(torch, tmp_path) -> None:
    ckpt = nanogpt_checkpoint()
    ckpt.pop("array"), ckpt.pop("numpy_number")

    def to_torch(x):
        if isinstance(x, dict):
            return {k: to_torch(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return type(x)(to_torch(v) for v in x)
        return torch.from_numpy(np.array(x)) if isinstance(x, mt.Tensor) else x

    def to_numpy(x):
        if isinstance(x, dict):
            return {k: to_numpy(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return type(x)(to_numpy(v) for v in x)
        return np.asarray(x) if isinstance(x, (mt.Tensor, torch.Tensor)) else x

    torch.save(to_torch(ckpt), tmp_path / "torch.pt")
    theirs = torch.load(tmp_path / "torch.pt")
    with pytest.raises(ValueError, match="torch.pt was written by torch.save .a pickle., which microtensor never"):
        mt.load(tmp_path / "torch.pt")
    mt.save(ckpt, tmp_path / "ours.pt")
    ours = mt.load(tmp_path / "ours.pt")
    assert_same_tree(to_numpy(ours), to_numpy(theirs))


@pytest.mark.parametrize("key", ["allow_pickle", "file", "a/b", "", "ünï", "x.npy", "structure.json", 3, None])
def test_any_key_round_trips(key, tmp_path) -> None:
    mt.save({key: mt.ones(2), "other": 1}, tmp_path / "k.pt")
    got = mt.load(tmp_path / "k.pt")
    assert list(got) == [key, "other"]
    np.testing.assert_array_equal(got[key], [1.0, 1.0])
    assert os.listdir(tmp_path) == ["k.pt"]


def test_tied_tensors_are_stored_once_and_come_back_sharing_memory(tmp_path) -> None:
    w = mt.randn(64, 64)
    mt.save({"a": w, "b": w.detach()}, tmp_path / "tied.pt")
    got = mt.load(tmp_path / "tied.pt")
    assert np.shares_memory(got["a"].data, got["b"].data)
    assert os.path.getsize(tmp_path / "tied.pt") < 1.5 * w.data.nbytes


def test_flat_files_of_earlier_versions_still_load(tmp_path) -> None:
    np.savez(tmp_path / "old.npz", **{"model/w": np.ones((2, 2), np.float32), "meta": np.zeros(3, np.uint8)})
    got = mt.load(tmp_path / "old.npz")
    assert list(got) == ["model/w", "meta"] and isinstance(got["model/w"], np.ndarray)
    np.testing.assert_array_equal(got["model/w"], np.ones((2, 2)))


def test_unsupported_values_are_refused_naming_where(tmp_path) -> None:
    with pytest.raises(TypeError, match=r"cannot store a set at obj\['config'\]\['s'\]"):
        mt.save({"config": {"s": {1, 2}}}, tmp_path / "x.pt")
    with pytest.raises(TypeError, match=r"dtype object"):
        mt.save({"a": np.array([{}], dtype=object)}, tmp_path / "x.pt")
    with pytest.raises(TypeError, match=r"dict keys must be"):
        mt.save({(1, 2): 0}, tmp_path / "x.pt")
    with pytest.raises(TypeError, match=r"cannot store a Linear at obj\['m'\].*save its state_dict\(\) instead"):
        mt.save({"m": mt.nn.Linear(2, 2)}, tmp_path / "x.pt")
    loop: dict = {}
    loop["self"] = loop
    with pytest.raises(ValueError, match=r"obj\['self'\] contains itself"):
        mt.save(loop, tmp_path / "x.pt")
    with pytest.raises(ValueError, match="CPU only"):
        mt.load(tmp_path / "x.pt", map_location="cuda")
    assert os.listdir(tmp_path) == []


def test_a_failed_save_keeps_the_old_file_and_leaves_no_temp(tmp_path, monkeypatch) -> None:
    path = tmp_path / "ckpt.pt"
    mt.save({"w": mt.ones(3)}, path)

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np.lib.format, "write_array", disk_full)
    with pytest.raises(OSError, match="No space"):
        mt.save({"w": mt.zeros(3)}, path)
    assert os.listdir(tmp_path) == ["ckpt.pt"]
    np.testing.assert_array_equal(mt.load(path)["w"], np.ones(3))


def test_temp_file_of_a_killed_save_is_removed_by_the_next_save(tmp_path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f"ckpt.pt.tmp{int(dead.stdout)}"
    live = tmp_path / f"ckpt.pt.tmp{os.getppid()}"  # a save still running in another process is left alone
    stale.write_bytes(b"PK partial")
    live.write_bytes(b"PK partial")
    mt.save({"w": mt.ones(1)}, tmp_path / "ckpt.pt")
    assert sorted(os.listdir(tmp_path)) == ["ckpt.pt", live.name]


def write_bytes(tmp_path, data: bytes, name: str = "bad.pt"):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_files_that_are_not_checkpoints_are_value_errors_naming_the_file(tmp_path) -> None:
    cases = {
        "empty.pt": (b"", "is empty"),
        "random.pt": (np.random.default_rng(0).bytes(300), "is not a zip archive"),
        "trunc.pt": (b"PK\x03\x04" + bytes(64), "is truncated or corrupt"),
    }
    for name, (data, message) in cases.items():
        with pytest.raises(ValueError, match=f"{name} {message}.*expected a file written by"):
            mt.load(write_bytes(tmp_path, data, name))
    np.save(tmp_path / "a.npy", np.ones(3))
    with pytest.raises(ValueError, match=r"a.npy is a single .npy array.*numpy.load"):
        mt.load(tmp_path / "a.npy")
    np.savez(tmp_path / "pickled.npz", obj=np.array([{"code": 1}], dtype=object))
    with pytest.raises(ValueError, match=r"pickled.npz entry 'obj.npy' holds Python objects"):
        mt.load(tmp_path / "pickled.npz")


def test_truncated_and_bit_flipped_checkpoints_are_value_errors(tmp_path) -> None:
    mt.save({"w": mt.randn(100, 100), "step": 3}, tmp_path / "good.pt")
    data = (tmp_path / "good.pt").read_bytes()
    for cut in (len(data) // 2, len(data) - 10):
        with pytest.raises(ValueError, match="cut.pt"):
            mt.load(write_bytes(tmp_path, data[:cut], "cut.pt"))
    flipped = bytearray(data)
    flipped[len(data) // 3] ^= 0x10  # inside the array's bytes: the CRC check catches it
    with pytest.raises(ValueError, match="flip.pt is truncated or corrupt"):
        mt.load(write_bytes(tmp_path, bytes(flipped), "flip.pt"))


def test_declared_sizes_are_checked_before_anything_is_inflated(tmp_path) -> None:
    header = np.lib.format.header_data_from_array_1_0(np.zeros(1, np.float32))
    header["shape"] = (2**28,)  # claims 1 GiB, holds 1 KiB
    with zipfile.ZipFile(tmp_path / "big.npz", "w") as zf, zf.open("w.npy", "w") as entry:
        np.lib.format.write_array_header_1_0(entry, header)
        entry.write(bytes(1024))
    with pytest.raises(ValueError, match=r"'w.npy' declares shape \(268435456,\) of float32 \(1073741824 bytes\)"):
        mt.load(tmp_path / "big.npz")
    np.savez_compressed(tmp_path / "bomb.npz", w=np.zeros(1000, np.float32))
    data = bytearray((tmp_path / "bomb.npz").read_bytes())
    central = data.rindex(b"PK\x01\x02")
    data[central + 24 : central + 28] = (2**31).to_bytes(4, "little")  # the uncompressed size it declares
    with pytest.raises(ValueError, match=r"declares 2147483648 bytes but the file holds"):
        mt.load(write_bytes(tmp_path, bytes(data), "bomb.npz"))


@pytest.mark.parametrize("structure", [
    b"not json", b"[]", b'{"format": "other", "tree": 1}', b'{"format": "microtensor-tree-1", "tree": {"tensor": 3}}',
    b'{"format": "microtensor-tree-1", "tree": {"dict": [[1, 2, 3]]}}',
    b'{"format": "microtensor-tree-1", "tree": {"list": [], "tuple": []}}',
])
def test_a_malformed_structure_entry_is_a_value_error(structure: bytes, tmp_path) -> None:
    with zipfile.ZipFile(tmp_path / "odd.pt", "w") as zf:
        zf.writestr("structure.json", structure)
    with pytest.raises(ValueError, match=r"odd.pt has a malformed structure.json entry|odd.pt.*format"):
        mt.load(tmp_path / "odd.pt")


def test_sigkill_during_saves_never_leaves_an_unloadable_file(tmp_path) -> None:
    """A child saves in a loop and is killed at random moments: the file always loads, the temp goes away."""
    path = tmp_path / "ckpt.pt"
    script = ("import sys, numpy as np, microtensor as mt\n"
              "w = np.random.default_rng(0).standard_normal(2**18)\n"
              "for i in range(10**6):\n"
              "    mt.save({'w': mt.tensor(w + i), 'i': i}, sys.argv[1])\n"
              "    print(i, flush=True)\n")
    delays = np.random.default_rng(0).uniform(0.0, 0.02, 3)
    for delay in delays:
        child = subprocess.Popen([sys.executable, "-c", script, str(path)], stdout=subprocess.PIPE, text=True)
        child.stdout.readline()  # one save done: the next ones are under way
        time.sleep(delay)
        child.kill()
        child.wait()
        got = mt.load(path)
        np.testing.assert_allclose(got["w"][:3], np.random.default_rng(0).standard_normal(3) + got["i"], rtol=1e-6)
    mt.save({"done": True}, path)
    assert os.listdir(tmp_path) == ["ckpt.pt"]
