"""Run in a torch-xla process (PJRT_DEVICE=CPU CPU_NUM_DEVICES=4) by tests/test_parallel_xla.py.

Shards a tiny masked LM with genolm.parallel (SPMD FSDPv2), trains it for a few static-shape steps,
exports the consolidated Hugging Face checkpoint, and writes the device's logits on a fixed batch and the
local shard shapes of one weight, so the test can reload the export on the CPU and compare.

    python tests/xla_export_worker.py OUT_DIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from genolm import GenoLMConfig, GenoLMForMaskedLM, GenoLMTokenizer, parallel
from genolm.training import MLMCollator


def main(out: Path) -> None:
    rt = parallel.setup("xla_fsdp", mixed_precision="no")
    torch.manual_seed(0)
    model = GenoLMForMaskedLM(GenoLMConfig.from_preset("tiny"))
    tokenizer = GenoLMTokenizer()
    model, optimizer = rt.prepare(model, lambda m: torch.optim.AdamW(m.parameters(), lr=1e-3))
    collator = MLMCollator.from_tokenizer(tokenizer, 32, vocab_size=4105, seed=0)
    g = torch.Generator().manual_seed(0)
    rows = [{"input_ids": torch.cat([torch.tensor([3]), torch.randint(4, 4100, (31,), generator=g)]).numpy()} for _ in range(8)]
    losses, compiles = [], []
    for _ in range(4):
        batch = rt.to_device(collator(rows))
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        rt.step_end()
        losses.append(float(loss.detach().cpu()))
        compiles.append(rt.compile_count())

    weight = rt.unwrap(model).genolm.encoder.layers[0].attention.query.weight
    from torch_xla.distributed.spmd.xla_sharding import wrap_as_sharded_tensor

    shard_shapes = [list(s.data.shape) for s in wrap_as_sharded_tensor(weight.detach()).local_shards]

    export = out / "export"
    state = rt.model_state_dict(model)
    rt.unwrap(model).save_pretrained(export, state_dict=state)
    tokenizer.save_pretrained(export)

    probe = collator.pad(rows[:4])
    model.eval()
    with torch.no_grad():
        logits = model(**rt.to_device(probe)).logits.cpu()
    torch.save({"batch": probe, "logits": logits}, out / "device_logits.pt")
    (out / "report.json").write_text(
        json.dumps(
            {
                "losses": losses,
                "compiles": compiles,
                "num_devices": rt.num_devices,
                "shard_shapes": shard_shapes,
                "weight_shape": list(weight.shape),
                "sharding": rt.sharding_summary(model),
            }
        )
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]))
