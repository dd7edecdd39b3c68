"""SoundStream, the neural audio codec behind the acoustic tokens: the network, its GAN
training (discriminators, losses) and the frozen encode / decode API."""
