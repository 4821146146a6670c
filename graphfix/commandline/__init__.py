"""The command line's parts besides graphfix/cli.py (the entry point and its commands): option groups
and the glue from parsed options to the API. Nothing outside graphfix.cli and this package uses
argparse (a test holds it), and nothing here imports onnx at import time (`graphfix -h` stays fast).

    trt.py        --fp16/--shapes/--plugins/... of validate and fix --check trt|rtx; validate's body
    plugins.py    --nms-plugin/--rules/--dequantize/... -> PassContext options
    precision.py  --precision/--keep-io-types/--calibration-data -> PassContext options
    shapes.py     --shapes/--min-shapes/... text -> {input: dims}
    batch.py      `graphfix fix A B DIR/ -o OUTDIR/`: each model through cli.cmd_fix in a worker process
"""
