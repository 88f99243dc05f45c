"""Build hook for the one C extension (batch hashing); all metadata lives in pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "sketches._chash",
            ["sketches/_chash.c"],
            extra_compile_args=["-O3", "-std=c99"],
            optional=True,  # without a compiler, sketches.hashing falls back to mmh3 (same hashes, slower)
        )
    ]
)
