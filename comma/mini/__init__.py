"""The embedded mini corpora, generated offline in the real datasets' formats: a synthetic
German-English language in the IWSLT14 layout (`nmt`) and espeak-ng speech as LJSpeech and
LibriTTS (`speech`)."""
