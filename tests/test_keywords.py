"""Keywords embedded in photos (data/keywords.py), as photo managers write them, and XMP that must
not be trusted: malformed, an XML bomb, an external entity.

The XMP packets below follow the layout each tool writes (Adobe's XMP toolkit for Lightroom,
Exiv2 for digiKam and darktable, Photo Mechanic's own), with the other properties those tools
put beside dc:subject, so that only dc:subject's items are taken for keywords. They are inserted
into the JPEGs by hand here (APP1), or written by Pillow itself for PNG, TIFF and WebP; the IPTC
blocks are built byte by byte.
"""
import io
import tracemalloc

import pytest
from PIL import Image, PngImagePlugin

from data import keywords

RDF = 'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"'
DC = 'xmlns:dc="http://purl.org/dc/elements/1.1/"'
LIGHTROOM = f"""<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/" x:xmptk="Adobe XMP Core 7.0-c000 1.000000, 0000/00/00-00:00:00        ">
 <rdf:RDF {RDF}>
  <rdf:Description rdf:about=""
    xmlns:xmp="http://ns.adobe.com/xap/1.0/"
    {DC}
    xmlns:photoshop="http://ns.adobe.com/photoshop/1.0/"
    xmlns:lr="http://ns.adobe.com/lightroom/1.0/"
   xmp:CreatorTool="Adobe Photoshop Lightroom Classic 13.0 (Windows)"
   xmp:ModifyDate="2024-05-01T10:00:00+02:00"
   photoshop:DateCreated="2024-05-01T09:58:12"
   dc:format="image/jpeg">
   <dc:title>
    <rdf:Alt>
     <rdf:li xml:lang="x-default">Evening at Praia da Luz</rdf:li>
    </rdf:Alt>
   </dc:title>
   <dc:subject>
    <rdf:Bag>
     <rdf:li>Beach</rdf:li>
     <rdf:li>Sunset</rdf:li>
     <rdf:li>Portugal</rdf:li>
    </rdf:Bag>
   </dc:subject>
   <lr:hierarchicalSubject>
    <rdf:Bag>
     <rdf:li>Places|Europe|Portugal</rdf:li>
    </rdf:Bag>
   </lr:hierarchicalSubject>
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>
{" " * 200}
<?xpacket end="w"?>"""
DIGIKAM = f"""<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/" x:xmptk="XMP Core 4.4.0-Exiv2">
 <rdf:RDF {RDF}>
  <rdf:Description rdf:about=""
    xmlns:digiKam="http://www.digikam.org/ns/1.0/"
    xmlns:MicrosoftPhoto="http://ns.microsoft.com/photo/1.0/"
    xmlns:lr="http://ns.adobe.com/lightroom/1.0/"
    xmlns:acdsee="http://ns.acdsee.com/iptc/1.0/"
    {DC}
    xmlns:xmp="http://ns.adobe.com/xap/1.0/"
   acdsee:categories="&lt;Categories&gt;&lt;Category Assigned=&quot;1&quot;&gt;Family&lt;/Category&gt;&lt;/Categories&gt;"
   xmp:Rating="3">
   <digiKam:TagsList>
    <rdf:Seq>
     <rdf:li>Family/Kids</rdf:li>
    </rdf:Seq>
   </digiKam:TagsList>
   <MicrosoftPhoto:LastKeywordXMP>
    <rdf:Bag>
     <rdf:li>Family/Kids</rdf:li>
    </rdf:Bag>
   </MicrosoftPhoto:LastKeywordXMP>
   <lr:hierarchicalSubject>
    <rdf:Bag>
     <rdf:li>Family|Kids</rdf:li>
    </rdf:Bag>
   </lr:hierarchicalSubject>
   <dc:subject>
    <rdf:Bag>
     <rdf:li>Kids</rdf:li>
     <rdf:li>Family</rdf:li>
     <rdf:li>Crianças &amp; Família</rdf:li>
    </rdf:Bag>
   </dc:subject>
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>
<?xpacket end="w"?>"""
DARKTABLE = f"""<x:xmpmeta xmlns:x="adobe:ns:meta/" x:xmptk="XMP Core 4.4.0-Exiv2">
 <rdf:RDF {RDF}>
  <rdf:Description rdf:about=""
    xmlns:exif="http://ns.adobe.com/exif/1.0/"
    xmlns:xmp="http://ns.adobe.com/xap/1.0/"
    {DC}
    xmlns:lr="http://ns.adobe.com/lightroom/1.0/"
    xmlns:darktable="http://darktable.sf.net/"
   xmp:Rating="1"
   darktable:xmp_version="5">
   <dc:subject>
    <rdf:Seq>
     <rdf:li>mountain</rdf:li>
     <rdf:li>snow</rdf:li>
    </rdf:Seq>
   </dc:subject>
   <lr:hierarchicalSubject>
    <rdf:Seq>
     <rdf:li>darktable|format|jpg</rdf:li>
     <rdf:li>landscape|mountain</rdf:li>
    </rdf:Seq>
   </lr:hierarchicalSubject>
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>
"""
PHOTO_MECHANIC = ("<?xpacket begin='\ufeff' id='W5M0MpCehiHzreSzNTczkc9d'?>\n"
                  "<x:xmpmeta xmlns:x='adobe:ns:meta/' x:xmptk='XMP toolkit 2.9.1-13, framework "
                  "1.6'>\n<rdf:RDF xmlns:rdf='http://www.w3.org/1999/02/22-rdf-syntax-ns#' "
                  "xmlns:iX='http://ns.adobe.com/iX/1.0/'>\n<rdf:Description rdf:about='' "
                  "xmlns:photomechanic='http://ns.camerabits.com/photomechanic/1.0/' "
                  "photomechanic:ColorClass='0' photomechanic:Tagged='False'/>\n"
                  "<rdf:Description rdf:about='' xmlns:dc='http://purl.org/dc/elements/1.1/'>\n"
                  "<dc:subject><rdf:Bag><rdf:li>Football</rdf:li><rdf:li>Estádio</rdf:li>"
                  "</rdf:Bag></dc:subject>\n</rdf:Description>\n</rdf:RDF>\n</x:xmpmeta>\n"
                  "<?xpacket end='w'?>")
# An XML bomb ("billion laughs"): 10 ** 6 copies of a 10-character string, 10 MB if expanded.
BOMB = ('<?xml version="1.0"?>\n<!DOCTYPE x:xmpmeta [\n <!ENTITY a0 "laughlaugh">\n'
        + "".join(f' <!ENTITY a{level} "{f"&a{level - 1};" * 10}">\n' for level in range(1, 7))
        + f']>\n<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF {RDF}><rdf:Description {DC}>'
        '<dc:subject><rdf:Bag><rdf:li>&a6;</rdf:li></rdf:Bag></dc:subject></rdf:Description>'
        '</rdf:RDF></x:xmpmeta>')
EXTERNAL_ENTITY = ('<?xml version="1.0"?>\n<!DOCTYPE x [<!ENTITY secret SYSTEM '
                   '"file:///etc/hostname">]>\n'
                   f'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF {RDF}><rdf:Description {DC}>'
                   '<dc:subject><rdf:Bag><rdf:li>&secret;</rdf:li></rdf:Bag></dc:subject>'
                   '</rdf:Description></rdf:RDF></x:xmpmeta>')


def jpeg(colour=(200, 30, 30), size=(48, 32)):
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def write(path, data):
    path.write_bytes(data)
    return str(path)


def iptc_field(record, dataset, value):
    return bytes([0x1C, record, dataset]) + len(value).to_bytes(2, "big") + value


@pytest.mark.parametrize("packet, expected", [
    (LIGHTROOM, ["Beach", "Sunset", "Portugal"]),
    (DIGIKAM, ["Kids", "Family", "Crianças & Família"]),
    (DARKTABLE, ["mountain", "snow"]),
    (PHOTO_MECHANIC, ["Football", "Estádio"]),
], ids=["lightroom", "digikam", "darktable", "photo_mechanic"])
def test_xmp_dc_subject_as_photo_managers_write_it(tmp_path, packet, expected):
    path = write(tmp_path / "photo.jpg", keywords.embed_metadata(jpeg(), packet.encode("utf-8")))
    assert keywords.read_keywords(path) == expected
    with Image.open(path) as image:  # still a good JPEG
        image.load()
        assert image.size == (48, 32)


def test_iptc_keywords_in_utf8_and_in_an_old_windows_encoding(tmp_path):
    utf8 = (iptc_field(1, 90, b"\x1b%G") + iptc_field(2, 25, "Café".encode())
            + iptc_field(2, 25, "여행".encode()) + iptc_field(2, 120, b"a caption, not a keyword"))
    path = write(tmp_path / "utf8.jpg", keywords.embed_metadata(jpeg(), iptc=utf8))
    assert keywords.read_keywords(path) == ["Café", "여행"]
    legacy = iptc_field(2, 25, "Café".encode("cp1252")) + iptc_field(2, 25, "€uro".encode("cp1252"))
    path = write(tmp_path / "legacy.jpg", keywords.embed_metadata(jpeg(), iptc=legacy))
    assert keywords.read_keywords(path) == ["Café", "€uro"]
    # Photo Mechanic, digiKam: both blocks, the same keywords (the union is deduplicated later).
    both = keywords.embed_metadata(jpeg(), keywords.xmp_packet(["Sea", "a < b & c"]),
                                   keywords.iptc_block(["Sea", "Sky"]))
    assert keywords.read_keywords(write(tmp_path / "both.jpg", both)) == [
        "Sea", "Sky", "Sea", "a < b & c"]


def test_xmp_in_png_tiff_and_webp(tmp_path):
    packet = keywords.xmp_packet(["Lake", "Dawn"]).decode("utf-8")
    image = Image.new("RGB", (40, 30), (20, 90, 160))
    info = PngImagePlugin.PngInfo()
    info.add_itxt("XML:com.adobe.xmp", packet)
    image.save(tmp_path / "a.png", pnginfo=info)
    image.save(tmp_path / "b.tif", tiffinfo={700: packet.encode("utf-8")})
    image.save(tmp_path / "c.webp", xmp=packet.encode("utf-8"), lossless=True)
    for name in ("a.png", "b.tif", "c.webp"):
        assert keywords.read_keywords(str(tmp_path / name)) == ["Lake", "Dawn"], name
    image.save(tmp_path / "none.png")
    assert keywords.read_keywords(str(tmp_path / "none.png")) == []


def test_an_xml_bomb_is_refused_before_it_expands(tmp_path):
    path = write(tmp_path / "bomb.jpg", keywords.embed_metadata(jpeg(), BOMB.encode("utf-8")))
    tracemalloc.start()
    try:
        with pytest.raises(keywords.MetadataError) as caught:
            keywords.read_keywords(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert caught.value.reason == "malformed_metadata"
    assert "XMP with a DTD or entities, refused unread" in caught.value.detail
    assert peak < 2_000_000  # expanded, the bomb would take 10 MB as text alone


def test_an_external_entity_never_reads_a_file(tmp_path):
    path = write(tmp_path / "xxe.jpg",
                 keywords.embed_metadata(jpeg(), EXTERNAL_ENTITY.encode("utf-8")))
    with pytest.raises(keywords.MetadataError, match="refused unread"):
        keywords.read_keywords(path)


@pytest.mark.parametrize("xmp, iptc, detail", [
    (b"<x:xmpmeta xmlns:x='adobe:ns:meta/'><rdf:RDF>", None, "malformed XMP: unbound prefix"),
    (LIGHTROOM.encode("utf-8")[:300], None, "malformed XMP: "),
    (None, b"\x1c\x02\x19\x00\x05Sea" + b"\x00\x07broken", "malformed IPTC"),
], ids=["unbound-prefix", "cut-short", "iptc"])
def test_malformed_metadata_is_a_reported_skip(tmp_path, xmp, iptc, detail):
    path = write(tmp_path / "bad.jpg", keywords.embed_metadata(jpeg(), xmp, iptc))
    with pytest.raises(keywords.MetadataError) as caught:
        keywords.read_keywords(path)
    assert caught.value.reason == "malformed_metadata" and detail in caught.value.detail


def test_files_that_are_no_photo(tmp_path):
    cases = {"text.jpg": (b"not an image", "undecodable"), "empty.jpg": (b"", "empty")}
    for name, (data, reason) in cases.items():
        with pytest.raises(keywords.MetadataError) as caught:
            keywords.read_keywords(write(tmp_path / name, data))
        assert caught.value.reason == reason
    with pytest.raises(keywords.MetadataError) as caught:
        keywords.read_keywords(str(tmp_path / "nothere.jpg"))
    assert caught.value.reason == "missing"
