"""Checks what headless Chromium rendered: each PNG decodes, has width and
height, and is not an empty page (enough non-background pixels in enough
colours); the PDF has at least one page. Standard library only."""
import struct
import sys
import zlib


def png_pixels(path):
    data = open(path, "rb").read()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise SystemExit(f"{path}: not a PNG")
    pos, idat, width, height, ctype, depth = 8, b"", 0, 0, 0, 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind = data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, ctype = struct.unpack(">IIBB", body[:10])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    if depth != 8 or ctype not in (2, 6):
        raise SystemExit(f"{path}: unexpected PNG type {ctype}/{depth}")
    bpp = 3 if ctype == 2 else 4
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows, prev = [], bytearray(stride)
    for y in range(height):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[i] = (line[i] + pred) & 255
        rows.append(bytes(line))
        prev = line
    return width, height, bpp, rows


def check_png(path):
    width, height, bpp, rows = png_pixels(path)
    colours, ink = set(), 0
    for row in rows[::4]:
        for x in range(0, width * bpp, bpp * 4):
            px = row[x:x + 3]
            colours.add(px)
            if px != b"\xff\xff\xff":
                ink += 1
    sampled = len(rows[::4]) * len(range(0, width * bpp, bpp * 4))
    share = ink / sampled
    print(f"{path}: {width}x{height}, {len(colours)} colours, {share:.1%} drawn")
    if len(colours) < 8 or share < 0.01:
        raise SystemExit(f"{path}: the page looks empty")


def check_pdf(path):
    data = open(path, "rb").read()
    pages = data.count(b"/Type /Page") - data.count(b"/Type /Pages")
    pages = max(pages, data.count(b"/Type/Page") - data.count(b"/Type/Pages"))
    print(f"{path}: {len(data)} bytes, {pages} pages")
    if not data.startswith(b"%PDF") or pages < 1:
        raise SystemExit(f"{path}: not a PDF with pages")


for p in sys.argv[1:]:
    (check_pdf if p.endswith(".pdf") else check_png)(p)
print("browser check: ok")
