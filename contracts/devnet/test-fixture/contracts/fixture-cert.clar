;; A toy certificate NFT with a fixed-price sale paid in STX, printing one event per action.
(define-non-fungible-token fixture-cert uint)
(define-data-var last-id uint u0)
(define-map listings uint {seller: principal, price: uint})

(define-public (mint (recipient principal) (wh uint) (uri (string-ascii 96)))
  (let ((id (+ (var-get last-id) u1)))
    (try! (nft-mint? fixture-cert id recipient))
    (var-set last-id id)
    (print {event: "mint", token-id: id, recipient: recipient, wh: wh, uri: uri})
    (ok id)))

(define-public (list-fixed (id uint) (price uint))
  (begin
    (asserts! (is-eq (some tx-sender) (nft-get-owner? fixture-cert id)) (err u401))
    (try! (nft-transfer? fixture-cert id tx-sender (as-contract tx-sender)))
    (map-set listings id {seller: tx-sender, price: price})
    (print {event: "list", token-id: id, price: price})
    (ok true)))

(define-public (buy (id uint))
  (let ((listing (unwrap! (map-get? listings id) (err u404)))
        (buyer tx-sender))
    (try! (stx-transfer? (get price listing) buyer (get seller listing)))
    (try! (as-contract (nft-transfer? fixture-cert id tx-sender buyer)))
    (map-delete listings id)
    (print {event: "sale", token-id: id, buyer: buyer, price: (get price listing)})
    (ok true)))

(define-read-only (get-owner (id uint))
  (ok (nft-get-owner? fixture-cert id)))
