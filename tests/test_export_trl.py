"""Real TRL: the `messages` and `prompt-completion` exports go through `SFTTrainer`'s data preparation and
one training step on CPU, with a tiny randomly initialised Llama and a word-level tokenizer trained here
on the exported text (no hub access).

Needs: pip install trl transformers "torch==2.13.0"   (skipped when trl is absent)
"""

import json
from pathlib import Path

import pytest

trl = pytest.importorskip("trl")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from test_export import CHAIN, SYSTEM, out  # noqa: E402,F401  (the module-scoped real run)

from curator.ship.export import ExportOptions, export  # noqa: E402

# A chat template with {% generation %} markers (TRL's assistant_only_loss) that renders
# reasoning_content the way Qwen3-style templates do.
TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}<|assistant|>\n{% generation %}"
    "{% if message['reasoning_content'] is defined and message['reasoning_content'] %}<think>\n{{ message['reasoning_content'] }}\n</think>\n\n{% endif %}"
    "{{ message['content'] }}<|end|>{% endgeneration %}\n"
    "{% else %}<|{{ message['role'] }}|>\n{{ message['content'] }}<|end|>\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
SPECIAL = ["[UNK]", "<pad>", "<s>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>", "<think>", "</think>",
           "<|begin_of_thought|>", "<|end_of_thought|>", "<|begin_of_solution|>", "<|end_of_solution|>"]


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    import huggingface_hub.constants as c

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True, raising=False)
    monkeypatch.setenv("WANDB_DISABLED", "true")


def _texts(path: Path) -> list[str]:
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        for key in ("messages", "prompt", "completion"):
            for m in row.get(key, []):
                out += [m["content"], m.get("reasoning_content") or ""]
    return out


def tiny_tokenizer(files: list[Path]):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator([t for f in files for t in _texts(f)], trainers.WordLevelTrainer(special_tokens=SPECIAL))
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="<pad>", bos_token="<s>",
                                   eos_token="<|end|>", chat_template=TEMPLATE, model_max_length=1024)


def tiny_model(tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=1024,
                      pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    return LlamaForCausalLM(cfg)


def train_one_step(data_dir: Path, tmp_path: Path, **cfg):
    from datasets import load_dataset
    from trl import SFTConfig, SFTTrainer

    files = {k: str(data_dir / f"{k}.jsonl") for k in ("train", "test") if (data_dir / f"{k}.jsonl").exists()}
    ds = load_dataset("json", data_files=files, cache_dir=str(tmp_path / "cache"))
    tok = tiny_tokenizer([Path(f) for f in files.values()])
    args = SFTConfig(output_dir=str(tmp_path / "trainer"), max_steps=1, per_device_train_batch_size=2, learning_rate=1e-3,
                     logging_steps=1, save_strategy="no", report_to="none", use_cpu=True, bf16=False, fp16=False,
                     max_length=512, dataloader_num_workers=0, **cfg)
    trainer = SFTTrainer(model=tiny_model(tok), args=args, train_dataset=ds["train"], eval_dataset=ds.get("test"), processing_class=tok)
    out = trainer.train()
    return trainer, tok, ds, out


def test_messages_export_trains_with_assistant_only_loss(out, tmp_path):  # noqa: F811
    res = export(out, ExportOptions(format="messages", to=tmp_path / "m", test_size=0.2))
    trainer, tok, ds, result = train_one_step(res.dir, tmp_path, assistant_only_loss=True)
    assert result.global_step == 1 and torch.isfinite(torch.tensor(result.training_loss))
    prepared = trainer.train_dataset
    assert len(prepared) == res.splits["train"] == len(ds["train"])
    row = prepared[0]
    # The loss covers the assistant turn (CoT in <think> and the answer), never the system or user turn.
    # TRL folds its masks into `labels` (-100: no loss).
    trained = tok.decode([t for t, lab in zip(row["input_ids"], row["labels"]) if lab != -100])
    assert trained.startswith("<think>") and "</think>" in trained and "boxed" in trained
    assert "<|system|>" not in trained and "<|user|>" not in trained and SYSTEM.split()[-1].strip(".") not in trained
    ctx = tok.decode([t for t, lab in zip(row["input_ids"], row["labels"]) if lab == -100])
    assert "<|system|>" in ctx and "<|user|>" in ctx and "<think>" not in ctx


@pytest.mark.parametrize("cot", ["think", "field"])
def test_prompt_completion_export_trains_on_the_completion_only(out, tmp_path, cot):  # noqa: F811
    res = export(out, ExportOptions(format="prompt-completion", to=tmp_path / "pc", cot=cot, test_size=0))
    trainer, tok, ds, result = train_one_step(res.dir, tmp_path)
    assert result.global_step == 1 and torch.isfinite(torch.tensor(result.training_loss))
    prepared = trainer.train_dataset
    assert len(prepared) == res.splits["train"]
    row = prepared[0]
    trained = tok.decode([t for t, lab in zip(row["input_ids"], row["labels"]) if lab != -100])
    prompt = tok.decode([t for t, lab in zip(row["input_ids"], row["labels"]) if lab == -100])
    # With --cot field the template renders reasoning_content into <think>: same tokens either way.
    assert trained.startswith("<think>") and "</think>" in trained and "boxed" in trained
    assert "<|user|>" in prompt and "<think>" not in prompt
