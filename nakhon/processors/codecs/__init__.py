"""The codec registry: one line per payload format (routes name a codec by its key).

Adding a format is one module with a class that has ``name`` and ``decode``
(:class:`~nakhon.processors.codecs.base.Codec`), its tests, and one line here.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from nakhon.processors.codecs.base import Codec
from nakhon.processors.codecs.chirpstack_v4 import ChirpstackV4Codec
from nakhon.processors.codecs.ngsi import NgsiCodec
from nakhon.processors.codecs.position import PositionCodec
from nakhon.processors.codecs.senml import SenmlJsonCodec
from nakhon.processors.codecs.senml_cbor import SenmlCborCodec
from nakhon.processors.codecs.simple_json import SimpleJsonCodec
from nakhon.processors.codecs.tts_v3 import TtsV3Codec

_ALL: tuple[Codec, ...] = (
    SenmlJsonCodec(),
    SenmlCborCodec(),
    SimpleJsonCodec(),
    PositionCodec(),
    NgsiCodec(),
    TtsV3Codec(),
    ChirpstackV4Codec(),
)

#: Codec name -> codec.
CODECS: Mapping[str, Codec] = MappingProxyType({codec.name: codec for codec in _ALL})


def get_codec(name: str) -> Codec:
    """The codec routes call ``name``; raises KeyError naming the known codecs."""
    try:
        return CODECS[name]
    except KeyError:
        raise KeyError(f"no codec {name!r}; known: {', '.join(sorted(CODECS))}") from None
