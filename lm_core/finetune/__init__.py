"""Fine-tuning: turning a pretrained GPT into a chat model.

Modules (import the one you need; this package imports none of them, so that reading chat data
does not pull in torch and building batches does not pull in `datasets`):

    chat      the chat template: Message, Conversation, ChatTemplate (role-token ids, loss masks,
              generation prompts, stop ids), shared by training, evaluation and `lmforge chat`
    data      reading and writing fine-tuning data: chat and preference JSONL files and
              `datasets` sources, validated with errors naming the file and line
    qa        a question/answer chat set built from the clean corpus when none is given
    batches   rendered chats -> (B, T) training tensors: padded, packed, and DPO pairs
"""
