"""Where VibrationModel objects live in the Kubernetes API, and what things in it may be called.

The group, version, kind and names the CRD declares, the operator watches and
the manifests carry; and the formats of an object's name and of a model
version, which name the model's slot and its files in each node's cache, so
the node side checks them too.
"""

from __future__ import annotations

GROUP = "edge.vibration.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "VibrationModel"
PLURAL = "vibrationmodels"
SINGULAR = "vibrationmodel"
SHORT_NAMES = ("vibm",)
CATEGORIES = ("vibration",)

VERSION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"
"""A model version (``v3``, ``v3-r2``): safe as a file name's part, as the node cache uses it."""
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
MAX_NAME_LENGTH = 63
NAME_RULE = (
    f"!has(self.metadata.name) || (size(self.metadata.name) <= {MAX_NAME_LENGTH} "
    f"&& self.metadata.name.matches('{NAME_PATTERN}'))"
)
NAME_MESSAGE = (
    f"metadata.name must be a DNS label: lowercase a-z, 0-9 and '-', at most {MAX_NAME_LENGTH} "
    "characters (it names the model's slot in each node's cache)"
)
