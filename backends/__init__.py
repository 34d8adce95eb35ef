"""Backend adapters. `backends.base` is the contract; each subpackage is one engine."""
