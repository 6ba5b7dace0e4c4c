"""The data formats a data spec can name, one module each: in-memory digit sets (`digits`), folders of image or
audio files (`folders`) and CSV manifests of such files (`manifests`). Text tables live in
`transferlab.data.text_tables`. `transferlab.data.specs` parses a spec and picks the format.

Each format turns a location into one loader per split (`request.SplitLoader`); reading happens when a loader is
called, so that only the chosen split is read.
"""

__all__: list[str] = []
