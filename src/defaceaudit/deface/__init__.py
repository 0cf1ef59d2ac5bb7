"""Defacers: native backends that run on a bare machine, and container command builders."""
