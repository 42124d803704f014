"""Dtype names with PyTorch's meanings, as numpy dtypes so that `dtype=mt.long` works wherever numpy's do."""

import numpy as np

float32 = np.dtype(np.float32)
float64 = np.dtype(np.float64)
float16 = np.dtype(np.float16)
int64 = np.dtype(np.int64)
int32 = np.dtype(np.int32)
int16 = np.dtype(np.int16)
int8 = np.dtype(np.int8)
uint8 = np.dtype(np.uint8)
bool = np.dtype(np.bool_)  # noqa: A001  (PyTorch's names, which shadow builtins here)
float = float32  # noqa: A001
double = float64
half = float16
long = int64
int = int32  # noqa: A001  (torch.int is int32)
short = int16
