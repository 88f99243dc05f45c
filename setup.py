"""Build hook for the C extensions (batch hashing, JSON Lines scanning); metadata is in pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "sketches._chash",
            ["sketches/_chash.c"],
            extra_compile_args=["-O3", "-std=c99"],
            optional=True,  # without a compiler, sketches.hashing falls back to mmh3 (same hashes, slower)
        ),
        Extension(
            "connectors._cjsonl",
            ["connectors/_cjsonl.c"],
            extra_compile_args=["-O3", "-std=c99"],
            optional=True,  # without a compiler, JSON Lines take the Python path (same result, slower)
        ),
    ]
)
