"""Wire types: the .proto files of this project and the modules generated from them."""
