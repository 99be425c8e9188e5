"""Writes the parquet test files of `tests/parquet_records.rs` from `records.json` (our own made-up records in the
FineHARD layout), the ways people re-save FineHARD: pyarrow's inference (negatives become a struct; snappy), a map
column (zstd), and negatives kept as a JSON string (gzip). `bad.parquet` holds rows that must be reported.

    python -m venv v && v/bin/pip install pyarrow && v/bin/python make.py      # pyarrow 26.0.1 wrote the committed files
"""
import json

import pyarrow as pa
import pyarrow.parquet as pq

recs = json.load(open("records.json"))

# 1. As Arrow infers it over all rows (`datasets` does the same): short_expr_negs -> struct, is_cn null where
#    absent. (`Table.from_pylist` without a schema would take the first row's keys only and lose is_cn.)
def inferred(rows):
    return pa.Table.from_struct_array(pa.array(rows))

pq.write_table(inferred(recs), "struct_snappy.parquet", compression="snappy")

# 2. short_expr_negs as map<string, string>.
box_map = pa.struct([("bbox", pa.list_(pa.float64())), ("short_expr", pa.string()), ("long_expr", pa.string()),
                     ("flag_short_neg", pa.int64()), ("short_expr_negs", pa.map_(pa.string(), pa.string()))])
schema = pa.schema([("f_path", pa.string()), ("caption", pa.string()), ("short_caption", pa.string()),
                    ("bbox_info", pa.list_(box_map)), ("is_cn", pa.bool_())])
rows = []
for r in recs:
    r = dict(r)
    r["bbox_info"] = [dict(b, short_expr_negs=list(b.get("short_expr_negs", {}).items())) for b in r.get("bbox_info", [])]
    rows.append(r)
pq.write_table(pa.Table.from_pylist(rows, schema=schema), "map_zstd.parquet", compression="zstd")

# 3. short_expr_negs as a JSON string, float32 boxes, two row groups.
rows = []
for r in recs:
    r = dict(r)
    r["bbox_info"] = [dict(b, short_expr_negs=json.dumps(b["short_expr_negs"], ensure_ascii=False) if "short_expr_negs" in b else None)
                      for b in r.get("bbox_info", [])]
    rows.append(r)
box_str = pa.struct([("bbox", pa.list_(pa.float32())), ("short_expr", pa.string()), ("long_expr", pa.string()),
                     ("flag_short_neg", pa.int32()), ("short_expr_negs", pa.string())])
schema = pa.schema([("f_path", pa.string()), ("caption", pa.string()), ("short_caption", pa.string()),
                    ("bbox_info", pa.list_(box_str)), ("is_cn", pa.bool_())])
pq.write_table(pa.Table.from_pylist(rows, schema=schema), "string_gzip.parquet", compression="gzip", row_group_size=2)

# bad.parquet: row 1 fine, row 2 without caption, row 3 a box outside the image, row 4 flag_short_neg = 2.
good = recs[1]
bad = [
    good,
    {"f_path": "x.jpg", "caption": None, "short_caption": "s", "bbox_info": []},
    dict(good, bbox_info=[dict(good["bbox_info"][0], bbox=[0.5, 0.5, 1.5, 0.9])]),
    dict(good, bbox_info=[dict(good["bbox_info"][0], flag_short_neg=2)]),
]
pq.write_table(inferred(bad), "bad.parquet")
