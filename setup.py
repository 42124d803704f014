"""Build script: compiles the C kernels through cffi; a failed compile leaves the numpy backend."""

from setuptools import setup
from setuptools.command.build_ext import build_ext


class OptionalBuildExt(build_ext):
    """Build the C extension if the compiler allows, else warn in one line and carry on."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as err:  # noqa: BLE001 - any compiler failure falls back to numpy
            print(f"WARNING: microtensor C kernels not built ({err}); the numpy backend will be used")

    def build_extension(self, ext) -> None:
        try:
            super().build_extension(ext)
        except Exception as err:  # noqa: BLE001
            print(f"WARNING: microtensor C kernels not built ({err}); the numpy backend will be used")


setup(
    cffi_modules=["microtensor/_backend/build_kernels.py:ffibuilder"],
    cmdclass={"build_ext": OptionalBuildExt},
)
