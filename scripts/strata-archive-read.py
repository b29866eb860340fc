#!/usr/bin/env python3
"""Reads a Strata archive in a local directory without Strata: checks every file against its
manifest's SHA-256 and every record's CRC32C, and prints each archived event as one JSON line,
in the order of the global log. Standard library only; the format is docs/format.md's
("Segment files", "Scavenged segments", "The archive").

    python3 scripts/strata-archive-read.py ARCHIVE_DIR [--stream STREAM] [--no-crc]

An S3 archive can be read the same way after copying it down (e.g. `aws s3 sync`).
Each line: position, stream, version, type, id, recordedAtMicros, contentType, metadata
(a JSON object or null) and data (JSON when the content type is JSON, else base64 in dataBase64).
It reads the segments the last whole archive run reached (strata-archive-complete.json), as a
restore does. They hold the log as it was written, less what scavenges had removed before a
segment was archived: a deleted stream's events not yet scavenged are there, and the deletion
itself is an event of its metastream ($$STREAM).
"""

import base64
import hashlib
import json
import os
import struct
import sys
import uuid

SEGMENT_HEADER = 64
RECORD_HEADER = 64


def crc32c_table():
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


TABLE = crc32c_table()


def crc32c(data, crc=0):
    crc ^= 0xFFFFFFFF
    for b in data:
        crc = TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def fail(msg):
    sys.stderr.write("error: " + msg + "\n")
    sys.exit(2)


def segment_events(path, manifest, check_crc):
    b = open(path, "rb").read()
    if len(b) < SEGMENT_HEADER or b[0:8] != b"STRATALG":
        fail(f"{path}: not a Strata segment")
    if crc32c(b[0:60]) != struct.unpack_from("<I", b, 60)[0]:
        fail(f"{path}: its header fails its CRC")
    version, hlen, salt, seg_no, first = struct.unpack_from("<IIQQQ", b, 8)
    if version not in (1, 2) or hlen != SEGMENT_HEADER:
        fail(f"{path}: segment format version {version} is not one this reader knows")
    if seg_no != manifest["segment"] or first != manifest["first_position"]:
        fail(f"{path}: its header does not match its manifest")
    end = struct.unpack_from("<Q", b, 52)[0] if version == 2 else len(b)
    if end > len(b) or end < SEGMENT_HEADER:
        fail(f"{path}: its records are said to end outside the file")
    at = SEGMENT_HEADER
    salt_bytes = struct.pack("<Q", salt)
    while at < end:
        if end - at < RECORD_HEADER:
            fail(f"{path}: a record at offset {at} is cut short")
        (length, crc, position, recorded, ) = struct.unpack_from("<IIQq", b, at)
        if length < RECORD_HEADER or at + length > end:
            fail(f"{path}: the record at offset {at} has an impossible length {length}")
        event_id = uuid.UUID(bytes=bytes(b[at + 24:at + 40]))
        (stream_version, data_len, meta_len, sid_len, et_len, ct_len, _flags) = struct.unpack_from(
            "<QIIHHBB", b, at + 40)
        if RECORD_HEADER + sid_len + et_len + ct_len + meta_len + data_len != length:
            fail(f"{path}: the record at offset {at} does not add up to its length")
        if check_crc and crc32c(b[at + 8:at + length], crc32c(salt_bytes)) != crc:
            fail(f"{path}: the record at offset {at} fails its CRC")
        if not manifest["first_position"] <= position < manifest["end_position"]:
            fail(f"{path}: the record at offset {at} holds position {position}, outside its manifest's range")
        p = at + RECORD_HEADER
        stream = b[p:p + sid_len].decode("utf-8"); p += sid_len
        event_type = b[p:p + et_len].decode("utf-8"); p += et_len
        content_type = b[p:p + ct_len].decode("ascii"); p += ct_len
        metadata = b[p:p + meta_len]; p += meta_len
        data = b[p:p + data_len]
        event = {
            "position": position,
            "stream": stream,
            "version": stream_version,
            "type": event_type,
            "id": str(event_id),
            "recordedAtMicros": recorded,
            "contentType": content_type,
            "metadata": json.loads(metadata) if metadata else None,
        }
        if "json" in content_type:
            event["data"] = json.loads(data) if data else None
        else:
            event["dataBase64"] = base64.b64encode(data).decode("ascii")
        yield event
        at += (length + 7) // 8 * 8


def main(argv):
    args = [a for a in argv if not a.startswith("--")]
    check_crc = "--no-crc" not in argv
    stream = None
    if "--stream" in argv:
        stream = argv[argv.index("--stream") + 1]
        args.remove(stream)
    if len(args) != 1:
        fail("usage: strata-archive-read.py ARCHIVE_DIR [--stream STREAM] [--no-crc]")
    root = args[0]
    about = json.load(open(os.path.join(root, "strata-archive.json")))
    if about.get("format") != 1:
        fail(f"archive format {about.get('format')} is not one this reader knows")
    complete = json.load(open(os.path.join(root, "strata-archive-complete.json")))
    if complete.get("store") != about.get("store"):
        fail("the complete mark names another store than the root object")
    seg_dir = os.path.join(root, "segments")
    next_position = 0
    for no in range(complete["segments"]):
        manifest = json.load(open(os.path.join(seg_dir, f"{no:020}.json")))
        if manifest["segment"] != no or manifest["store"] != about["store"]:
            fail(f"segment {no}'s manifest is not this archive's segment {no}")
        if manifest["first_position"] != next_position:
            fail(f"segment {no} starts at position {manifest['first_position']}, not {next_position}")
        next_position = manifest["end_position"]
        for f in manifest["files"]:
            digest = hashlib.sha256(open(os.path.join(seg_dir, f["name"]), "rb").read()).hexdigest()
            if digest != f["sha256"]:
                fail(f"{f['name']}: its SHA-256 is not the one its manifest names")
        seg = next(f["name"] for f in manifest["files"] if f["name"].endswith(".seg"))
        count = 0
        for event in segment_events(os.path.join(seg_dir, seg), manifest, check_crc):
            count += 1
            if stream is None or event["stream"] == stream:
                print(json.dumps(event, separators=(",", ":")))
        if count != manifest["events"]:
            fail(f"{seg} holds {count} events, its manifest names {manifest['events']}")
    if next_position != complete["end_position"]:
        fail("the segments do not end where the complete mark says")


if __name__ == "__main__":
    main(sys.argv[1:])
