"""Fine-tuning: turning a pretrained GPT into a chat model.

Modules (import the one you need; this package imports none of them, so that reading chat data
does not pull in torch and building batches does not pull in `datasets`). The chat template they
render with is `lm_core.tokenize.chat_template`; int8 compression is `lm_core.quantize`.

    data      reading and writing fine-tuning data: chat and preference JSONL files and
              `datasets` sources, validated with errors naming the file and line
    qa        a question/answer chat set built from the clean corpus when none is given
    batches   rendered chats -> (B, T) training tensors: padded, packed, and DPO pairs
    lora      freezing, LoRA adapters and merging them back into plain weights
    losses    sequence log-probabilities, the DPO loss, the distillation loss
    curriculum  easy-to-hard orders (by length or by the starting model's loss)
    train     the fine-tuning loop (sft, dpo, distill) on one device
    artifact  the names of the artifact's held-out data files, and FinetuneError (light)
    stage     the `finetune` artifact: which base, which data, the fingerprint (light)
    build     the stage's heavy half: examples, model set-up for the method, training, writing
"""
