"""A photo's embedded keywords, as photo managers write them: IPTC Keywords and XMP dc:subject.

Lightroom, digiKam, darktable (on export) and Photo Mechanic write a photo's keywords into the
file twice: the IPTC-IIM record 2:25 (Keywords, one field per keyword, in Photoshop's APP13
block of a JPEG or a TIFF tag) and the XMP packet's dc:subject bag (`<rdf:li>` items; in a
JPEG's APP1, a PNG's iTXt chunk, a TIFF's tag 700 or a WebP's XMP chunk). `read_keywords` reads
both with Pillow and returns their union, as written (vocabulary.normalize_tag comes after).

Safety: XMP is XML from strangers. It is parsed by defusedxml with DTDs forbidden, so an XML
bomb (entities that expand to gigabytes) or an external entity (a file of this machine read into
a keyword) is refused before anything expands; such a photo, and one whose XMP or IPTC is
malformed, is skipped with `MetadataError` (reason `malformed_metadata`). IPTC keywords are
UTF-8 when the record 1:90 says so (`ESC % G`, as current tools write), else UTF-8 if they
decode as such, else Windows-1252 (older Windows tools).

`embed_metadata` writes both blocks into a JPEG the way those tools do; the benchmark and the
tests use it to make keyworded photos.
"""
import os
import stat
from xml.etree.ElementTree import ParseError

from PIL import Image, IptcImagePlugin

try:
    from defusedxml import DefusedXmlException
    from defusedxml.ElementTree import fromstring as _parse_xml
except ImportError:  # an XMP parser without it would expand XML bombs: refuse to read XMP
    _parse_xml = DefusedXmlException = None

RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
DC = "http://purl.org/dc/elements/1.1/"
XMP_HEADER = b"http://ns.adobe.com/xap/1.0/\x00"  # a JPEG APP1 segment holding XMP
PHOTOSHOP_HEADER = b"Photoshop 3.0\x00"  # a JPEG APP13 segment holding IPTC
IPTC_KEYWORDS, IPTC_CHARSET = (2, 25), (1, 90)
IPTC_UTF8 = b"\x1b%G"
MAX_XMP_BYTES = 16 * 2**20  # Lightroom's packets with develop history are ~100 kB


class MetadataError(Exception):
    """A photo whose keywords cannot be read; `reason` is the skip report's code."""

    def __init__(self, reason, detail):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def read_keywords(path):
    """The keywords embedded in the image file at `path` (IPTC then XMP, repeats included);
    raises MetadataError."""
    try:
        info = os.stat(path)
    except OSError as error:
        raise MetadataError("missing", error.strerror or str(error)) from None
    if not stat.S_ISREG(info.st_mode):  # a FIFO would block the reader
        raise MetadataError("missing", "not a regular file")
    if info.st_size == 0:
        raise MetadataError("empty", "file is empty (0 bytes)")
    try:
        with Image.open(path) as image:
            packet = _xmp_packet(image)
            iptc = _iptc_keywords(image)
    except MetadataError:
        raise
    except Exception as error:  # PIL raises many types for bad files; each is a skip
        raise MetadataError("undecodable", f"{type(error).__name__}: {error}".splitlines()[0][:200]
                            ) from None
    return iptc + (xmp_keywords(packet) if packet else [])


def _xmp_packet(image):
    packet = image.info.get("xmp") or image.info.get("XML:com.adobe.xmp")
    if packet is None and hasattr(image, "tag_v2"):  # TIFF, on Pillow versions before "xmp"
        packet = image.tag_v2.get(700)
    for marker, data in getattr(image, "applist", ()):  # JPEG, on Pillow versions before "xmp"
        if packet is None and marker == "APP1" and data.startswith(XMP_HEADER):
            packet = data[len(XMP_HEADER):]
    return packet.encode("utf-8") if isinstance(packet, str) else packet


def xmp_keywords(packet):
    """The dc:subject items of an XMP packet (bytes); raises MetadataError."""
    if _parse_xml is None:
        raise MetadataError("malformed_metadata", "the photo has XMP, and reading it safely "
                            "needs defusedxml: pip install -r requirements.txt")
    if len(packet) > MAX_XMP_BYTES:
        raise MetadataError("malformed_metadata", f"XMP packet of {len(packet):,} bytes (more "
                            f"than {MAX_XMP_BYTES:,}: refused)")
    try:
        root = _parse_xml(packet.strip(b"\x00 \t\r\n"), forbid_dtd=True)
    except DefusedXmlException as error:
        raise MetadataError("malformed_metadata", "XMP with a DTD or entities, refused unread "
                            f"(an XML bomb or an external entity): {error}") from None
    except (ParseError, ValueError) as error:
        raise MetadataError("malformed_metadata", f"malformed XMP: {error}") from None
    keywords = []
    for subject in root.iter(f"{{{DC}}}subject"):
        items = list(subject.iter(f"{{{RDF}}}li"))
        keywords.extend(item.text or "" for item in items)
        if not items and subject.text:  # a plain property, which some tools write
            keywords.append(subject.text)
    for description in root.iter(f"{{{RDF}}}Description"):  # the attribute form
        keywords.extend(filter(None, [description.get(f"{{{DC}}}subject")]))
    return keywords


def _iptc_keywords(image):
    try:
        info = IptcImagePlugin.getiptcinfo(image) or {}
    except Exception as error:  # Pillow's IPTC parser raises SyntaxError, OSError...
        raise MetadataError("malformed_metadata", f"malformed IPTC: {error}") from None
    values = info.get(IPTC_KEYWORDS) or []
    values = [values] if isinstance(values, bytes) else values
    utf8 = info.get(IPTC_CHARSET) == IPTC_UTF8
    return [_decode_iptc(value, utf8) for value in values if value]


def _decode_iptc(value, utf8):
    if utf8:
        return value.decode("utf-8", "replace")
    for encoding in ("utf-8", "cp1252"):
        try:
            return value.decode(encoding)
        except UnicodeDecodeError:
            pass
    return value.decode("latin-1")


# ---------------------------------------------------------------------------- writing

def _escape(text):
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def xmp_packet(keywords):
    """An XMP packet with `keywords` as dc:subject, laid out as Adobe's XMP toolkit writes it."""
    items = "".join(f"     <rdf:li>{_escape(keyword)}</rdf:li>\n" for keyword in keywords)
    return (f'<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
            f'<x:xmpmeta xmlns:x="adobe:ns:meta/">\n <rdf:RDF xmlns:rdf="{RDF}">\n'
            f'  <rdf:Description rdf:about="" xmlns:dc="{DC}">\n   <dc:subject>\n'
            f'    <rdf:Bag>\n{items}    </rdf:Bag>\n   </dc:subject>\n  </rdf:Description>\n'
            f' </rdf:RDF>\n</x:xmpmeta>\n<?xpacket end="w"?>').encode("utf-8")


def iptc_block(keywords, encoding="utf-8"):
    """IPTC-IIM data: the record 1:90 saying UTF-8 (when it is), then one 2:25 per keyword."""
    data = b"\x1c\x01\x5a\x00\x03" + IPTC_UTF8 if encoding == "utf-8" else b""
    for keyword in keywords:
        raw = keyword.encode(encoding)
        data += b"\x1c\x02\x19" + len(raw).to_bytes(2, "big") + raw
    return data


def _segment(marker, payload):
    if len(payload) > 65533:
        raise ValueError(f"a JPEG segment holds at most 65,533 bytes, not {len(payload):,}")
    return bytes([0xFF, marker]) + (len(payload) + 2).to_bytes(2, "big") + payload


def embed_metadata(jpeg, xmp=None, iptc=None):
    """The JPEG bytes `jpeg` with an XMP packet (APP1) and IPTC-IIM data (`iptc`, in
    Photoshop's APP13 resource 0x0404) inserted after the JFIF header, where tools put them."""
    if not jpeg.startswith(b"\xff\xd8"):
        raise ValueError("not a JPEG")
    position = 2
    if jpeg[2:4] == b"\xff\xe0":  # APP0 (JFIF) stays first
        position = 4 + int.from_bytes(jpeg[4:6], "big")
    segments = b""
    if xmp is not None:
        segments += _segment(0xE1, XMP_HEADER + xmp)
    if iptc is not None:
        resource = (b"8BIM\x04\x04\x00\x00" + len(iptc).to_bytes(4, "big") + iptc
                    + b"\x00" * (len(iptc) % 2))
        segments += _segment(0xED, PHOTOSHOP_HEADER + resource)
    return jpeg[:position] + segments + jpeg[position:]
