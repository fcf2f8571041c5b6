# NAR models (paper Tables 2-4): NAT, NAR-ASR, FastSpeech and their variants.
