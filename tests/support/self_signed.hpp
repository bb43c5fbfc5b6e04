#pragma once
// A throwaway TLS identity for 127.0.0.1 made with OpenSSL in memory: a P-256 key and a
// self-signed certificate naming IP 127.0.0.1, valid for an hour, also written as PEM to a
// temporary file that a client can trust as its CA file, and its key to another, for a server
// that reads files (nats-server). Both removed when it goes out of scope.

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <stdexcept>
#include <string>

namespace outbox_test {

class self_signed {
 public:
  self_signed() {
    key_ = EVP_EC_gen("P-256");
    cert_ = X509_new();
    if (key_ == nullptr || cert_ == nullptr) throw std::runtime_error("self_signed: OpenSSL allocation failed");
    X509_set_version(cert_, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(cert_), 1);
    X509_gmtime_adj(X509_getm_notBefore(cert_), -60);
    X509_gmtime_adj(X509_getm_notAfter(cert_), 3600);
    X509_set_pubkey(cert_, key_);
    X509_NAME* name = X509_get_subject_name(cert_);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>("127.0.0.1"), -1, -1, 0);
    X509_set_issuer_name(cert_, name);
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, cert_, cert_, nullptr, nullptr, 0);
    for (const auto& [nid, value] : {std::pair{NID_subject_alt_name, "IP:127.0.0.1"},
                                     std::pair{NID_basic_constraints, "critical,CA:TRUE"}}) {
      X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
      if (ext == nullptr || X509_add_ext(cert_, ext, -1) != 1) throw std::runtime_error("self_signed: extension");
      X509_EXTENSION_free(ext);
    }
    if (X509_sign(cert_, key_, EVP_sha256()) == 0) throw std::runtime_error("self_signed: signing failed");

    BIO* bio = BIO_new(BIO_s_mem());
    PEM_write_bio_X509(bio, cert_);
    char* data = nullptr;
    const long size = BIO_get_mem_data(bio, &data);
    const std::string pem(data, static_cast<std::size_t>(size));
    BIO_free(bio);
    const std::string unique = std::to_string(std::random_device{}());
    ca_file_ = std::filesystem::temp_directory_path() / ("outbox-test-ca-" + unique + ".pem");
    std::ofstream(ca_file_) << pem;

    bio = BIO_new(BIO_s_mem());
    PEM_write_bio_PrivateKey(bio, key_, nullptr, nullptr, 0, nullptr, nullptr);
    const long key_size = BIO_get_mem_data(bio, &data);
    const std::string key_pem(data, static_cast<std::size_t>(key_size));
    BIO_free(bio);
    key_file_ = std::filesystem::temp_directory_path() / ("outbox-test-key-" + unique + ".pem");
    std::ofstream(key_file_) << key_pem;
    std::filesystem::permissions(key_file_, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
  }
  self_signed(const self_signed&) = delete;
  self_signed& operator=(const self_signed&) = delete;
  ~self_signed() {
    X509_free(cert_);
    EVP_PKEY_free(key_);
    std::error_code ignored;
    std::filesystem::remove(ca_file_, ignored);
    std::filesystem::remove(key_file_, ignored);
  }

  [[nodiscard]] X509* cert() const { return cert_; }
  [[nodiscard]] EVP_PKEY* key() const { return key_; }
  [[nodiscard]] std::string ca_file() const { return ca_file_.string(); }
  /// The certificate itself is the CA file: it signs itself.
  [[nodiscard]] std::string cert_file() const { return ca_file_.string(); }
  [[nodiscard]] std::string key_file() const { return key_file_.string(); }

 private:
  X509* cert_ = nullptr;
  EVP_PKEY* key_ = nullptr;
  std::filesystem::path ca_file_;
  std::filesystem::path key_file_;
};

}  // namespace outbox_test
