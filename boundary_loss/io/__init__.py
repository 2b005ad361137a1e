"""Writing files and folders safely (`atomic`), the command-line conventions (`console`), and the
process group of a distributed run (`distributed`). The bottom layer: it imports no other part of
the package."""
