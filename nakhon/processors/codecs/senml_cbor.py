"""``senml-cbor``: a SenML pack in CBOR (RFC 8428 §6), decoded with cbor2.

CBOR packs use integer labels (RFC 8428 §6, Table 4): ``bver`` -1, ``bn`` -2,
``bt`` -3, ``bu`` -4, ``bv`` -5, ``bs`` -6, ``n`` 0, ``u`` 1, ``v`` 2, ``vs`` 3,
``vb`` 4, ``s`` 5, ``t`` 6, ``ut`` 7, ``vd`` 8. They are mapped to the JSON
labels and the pack is resolved by the same code as SenML JSON
(:func:`nakhon.processors.codecs.senml.resolve_pack`). Text labels are accepted
as they are; integer labels this table does not know are ignored.
"""

from __future__ import annotations

from collections.abc import Mapping

import cbor2

from nakhon.domain.records import Decoded
from nakhon.processors.codecs.base import DecodeError, TopicContext
from nakhon.processors.codecs.senml import resolve_pack

#: RFC 8428 §6, Table 4.
CBOR_LABELS: Mapping[int, str] = {
    -1: "bver",
    -2: "bn",
    -3: "bt",
    -4: "bu",
    -5: "bv",
    -6: "bs",
    0: "n",
    1: "u",
    2: "v",
    3: "vs",
    4: "vb",
    5: "s",
    6: "t",
    7: "ut",
    8: "vd",
}

# What cbor2 raises on malformed or hostile input: CBORError (CBORDecodeError;
# in cbor2 6 not a ValueError) for bad encodings, and the others for valid CBOR
# that does not fit Python (unhashable map keys, huge or deeply nested items).
_CBOR_ERRORS = (
    cbor2.CBORError,
    ValueError,
    TypeError,
    OverflowError,
    RecursionError,
    MemoryError,
    EOFError,
)


class SenmlCborCodec:
    """``senml-cbor``: a SenML pack as a CBOR array (RFC 8428 §6)."""

    name = "senml-cbor"

    def decode(self, payload: bytes, ctx: TopicContext) -> Decoded:
        return decode_senml_cbor(payload, ctx)


def decode_senml_cbor(payload: bytes, ctx: TopicContext) -> Decoded:
    try:
        pack = cbor2.loads(payload)
    except _CBOR_ERRORS as exc:
        raise DecodeError("malformed_cbor", str(exc)[:200]) from exc
    if not isinstance(pack, list):
        raise DecodeError("malformed_senml", "a SenML pack is an array of records")
    return resolve_pack([_text_labels(record) for record in pack], ctx)


def _text_labels(record: object) -> object:
    if not isinstance(record, dict):
        return record
    labelled: dict[object, object] = {}
    for label, value in record.items():
        if isinstance(label, int) and not isinstance(label, bool):
            text = CBOR_LABELS.get(label)
            if text is not None:
                labelled[text] = value
        elif isinstance(label, str):
            labelled[label] = value
    return labelled
